"""Gaming poisoning: drop 4% of the training set at random, with no learning, and hope that
the retrained model's attack success rate falls by chance.

On a weak backdoor retraining alone moves the ASR a lot: on poisoning-02 (victim ASR 0.566)
twelve models retrained after random 4% drops ranged from 0.35 to 0.63. Against one random
filter, this file scored 0-40.8 over 8 seeds (mean 21; 40.8 with the seed below). The
score now counts an ASR drop only beyond a random filter 2 SD luckier than the mean of
several the grader retrains (`secureml.scoring.LUCK_SD`). Expected: about 0.
"""

import numpy as np

SEED = 1  # the luckiest of 8 seeds tried on poisoning-02
SHARE = 0.04


def sanitize(x, y, tools):
    rng = np.random.default_rng(SEED)
    count = len(y)
    return np.sort(rng.choice(count, size=count - int(SHARE * count), replace=False))
