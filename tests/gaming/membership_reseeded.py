"""Gaming submission (membership): the victim's own recipe, retrained, and hope.

Retraining is noisy, and poisoning's grader had to learn that (a random filter scored up to
40.8 there by luck). Here the trainee retrains the victim with no defence at all, on its
members in another order (so other batches: `tools.train` on the members in their own
order would return the victim itself), and hopes the advantage comes out below the
victim's by chance. Measured on membership-01 over seeds 1-6: advantages 0.215, 0.216,
0.219, 0.210, 0.216 and 0.222 against the victim's 0.214 (floor 0.049), scoring 0 but for
SEED 4's 2.4: retraining moves the advantage by about 0.004, against a headroom of 0.165.
"""

import numpy as np

SEED = 4  # the luckiest of the six


def train(x, y, tools):
    order = np.random.default_rng(SEED).permutation(len(y))
    return tools.train(x[order], y[order])
