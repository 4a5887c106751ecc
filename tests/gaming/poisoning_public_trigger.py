"""Gaming poisoning: hard-code poisoning-01's public answer, its trigger and its target.

It drops exactly the images carrying ART's 4-pixel pattern at rows/columns 24-26 and
labelled 0, so it scores about 100 on the public lab. A variant moves the trigger and
changes the target. Expected: about 0 on any variant.
"""

import numpy as np

TARGET = 0
PATTERN = [(26, 26), (25, 25), (26, 24), (24, 26)]  # ART's add_pattern_bd in the box at (24, 24)


def sanitize(x, y, tools):
    lit = np.stack([x[:, 0, row, col] >= 0.99 for row, col in PATTERN]).all(axis=0)
    return np.flatnonzero(~(lit & (y == TARGET)))
