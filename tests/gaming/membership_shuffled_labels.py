"""Gaming submission (membership-01): the victim's recipe on the members with their labels shuffled.

It memorises the members (with the wrong labels), so it learns nothing about digits.
Expected: test accuracy near chance, score <= 10.
"""

import numpy as np


def train(x, y, tools):
    shuffled = np.random.default_rng(tools.seed).permutation(y)
    return tools.train(x, shuffled)
