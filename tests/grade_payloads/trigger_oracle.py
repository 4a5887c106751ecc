"""Cheap and deterministic: drop images carrying poisoning-01's 4-pixel trigger.

It knows the trigger (a trainee could not), so it removes exactly the poison without
importing torch; the grader's retraining on its kept set is what gets exercised.
"""

import numpy as np

TRIGGER_PIXELS = [(-4, -2), (-3, -3), (-2, -4), (-2, -2)]  # ART's add_pattern_bd, distance 2


def sanitize(x, y, tools):
    lit = np.stack([x[:, 0, row, col] >= 0.99 for row, col in TRIGGER_PIXELS]).all(axis=0)
    return np.flatnonzero(~lit)
