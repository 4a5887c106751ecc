"""Ship a malicious pickle as "weights.pt" next to an honest mitigation: nobody may load it."""

import numpy as np


def sanitize(x, y, tools):
    return np.arange(len(y))
