"""Honest and cheap: keep everything (no mitigation). Scores 0."""

import numpy as np


def sanitize(x, y, tools):
    return np.arange(len(y))
