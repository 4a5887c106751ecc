"""Gaming submission (inversion-02): labels only, the one-line answer the floor used to reward.

A one-hot vector of the argmax leaks least, but keeps none of what a confidence API is
for. Expected: usefulness halved, score about 50, clearly below the reference.
"""

import numpy as np


def protect(model, tools):
    return lambda x: np.eye(tools.num_classes, dtype=np.float32)[tools.probabilities(model, x).argmax(axis=1)]
