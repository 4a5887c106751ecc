"""Gaming submission (inversion-02): every score shifted up by the same small amount.

0.1% of uniform mass mixed into every answer: p -> 0.999 p + 0.0001. The argmax and the
ranking are untouched, a client hardly notices, and every runner-up now sits at 1e-4 or
more, which hides the smallest ones from an attacker who reads fixed log scores. The
shift is the same for every answer, so the attacker learns to undo it from its own
queries. Expected: score <= 10.
"""

import numpy as np

UNIFORM_MASS = 1e-3


def protect(model, tools):
    def api(x):
        probabilities = tools.probabilities(model, x)
        return ((1 - UNIFORM_MASS) * probabilities + UNIFORM_MASS / tools.num_classes).astype(np.float32)

    return api
