"""Gaming submission (extraction): the undefended API with a tiny random jitter, and hope.

The grader trains its copies afresh on whatever the API answered, so an answer changed by
one part in a thousand changes the copies, and their fidelity moves by chance. Measured on
extraction-01 over seeds 1-4: each single copy lost up to 0.048 of the headroom by chance,
but never in every presentation at once, and the score takes the worst presentation: every
seed scored 0. SEED 2 moved the copies most.
"""

import numpy as np

SEED = 2


def protect(model, tools):
    rng = np.random.default_rng(SEED)

    def api(x):
        p = tools.probabilities(model, x)
        p = np.clip(p * (1.0 + 1e-3 * rng.standard_normal(p.shape)), 0.0, 1.0)
        return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)

    return api
