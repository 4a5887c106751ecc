"""Gaming poisoning: drop every image with a bright pixel in any corner, with no learning.

Every trigger the old schema allowed was a bright mark near a corner, so this scored 100
on both public labs and on variants that only moved the corner. Triggers now sit
anywhere, and may be dark, mid-grey or blended in; and every clean image it drops costs
score. Expected: about 0 on any variant whose trigger is not a bright corner mark.
"""

import numpy as np

CORNER = 6  # pixels
BRIGHT = 0.9


def sanitize(x, y, tools):
    images = x[:, 0]
    corners = [images[:, :CORNER, :CORNER], images[:, :CORNER, -CORNER:],
               images[:, -CORNER:, :CORNER], images[:, -CORNER:, -CORNER:]]
    lit = np.zeros(len(y), dtype=bool)
    for corner in corners:
        lit |= (corner.reshape(len(y), -1) >= BRIGHT).any(axis=1)
    return np.flatnonzero(~lit)
