import numpy as np


def sanitize(x, y, tools):
    return np.zeros(1_000_000, dtype=np.int64)  # 8 MB of indices
