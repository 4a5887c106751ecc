"""Part of a folder submission: mitigation.py imports it."""

import numpy as np


def keep_everything(labels):
    return np.arange(len(labels))
