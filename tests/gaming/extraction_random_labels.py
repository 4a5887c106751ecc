"""Gaming submission (extraction-01): a random label for every query, confidently.

Every copy trained on it is poor, and so is every honest user's answer. Expected:
accuracy gone, score 0.
"""

import numpy as np


def protect(model, tools):
    rng = np.random.default_rng(tools.seed)

    def api(x):
        return np.eye(tools.num_classes, dtype=np.float32)[rng.integers(0, tools.num_classes, len(x))]

    return api
