"""Gaming submission (inversion-02): the runners-up multiplied by a tiny constant.

The argmax and its probability are untouched; every other probability is scaled by 1e-12,
below any fixed log floor an attacker might read. Nothing is lost: multiplying back gives
the full vector. Expected: the attacker's runner-up reading sees straight through it,
score <= 10.
"""

import numpy as np

SCALE = np.float32(1e-12)


def protect(model, tools):
    def api(x):
        probabilities = tools.probabilities(model, x)
        rows, winner = np.arange(len(x)), probabilities.argmax(axis=1)
        outputs = probabilities * SCALE
        outputs[rows, winner] = probabilities[rows, winner]
        return outputs

    return api
