"""Gaming submission (inversion-02): the runners-up's values handed out in reverse order.

The argmax keeps its probability; among the other classes, the most likely gets the
smallest value, the second most likely the second smallest, and so on. The rule is the
same for every answer, so an attacker who reads ranks learns to undo it from its own
queries. Expected: score <= 10.
"""

import numpy as np


def protect(model, tools):
    def api(x):
        probabilities = tools.probabilities(model, x)
        order = np.argsort(-probabilities, axis=1)  # winner first, then runners-up, descending
        runners_up = order[:, 1:]
        rows = np.arange(len(x))[:, None]
        outputs = probabilities.copy()
        outputs[rows, runners_up] = probabilities[rows, runners_up[:, ::-1]]
        return outputs

    return api
