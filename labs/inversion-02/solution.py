"""Reference solution for inversion-02 (instructors' copy): the label and its confidence.

Fredrikson et al. (CCS 2015) already suggested rounding confidences; Yang et al. (CCS
2019) showed that an attacker who trains on the truncated outputs recovers a lot from
top-k vectors. What describes a user's image is the small probabilities of the *other*
classes: a "4" that the model thinks is 3% "9" and 0.1% "1" is a particular 4. What a
client needs is the class and how sure the model is of it. So return exactly that: the
winning class with its confidence to two decimals, and nothing for the other classes
(a client spreads the rest evenly over them).

Measured on inversion-02, seed 1234: clients keep 0.69 of what the full vector's
confidences add over labels (log loss; 0.62 to 0.68 on seeds 7, 1235, 1236), the argmax
never changes, and the attacker identifies users about as well as from labels alone
(0.549 against 0.540; 0.953 from the full vector): score 97.9.
"""

import numpy as np


def protect(model, tools):
    def api(x):
        probabilities = tools.probabilities(model, x)
        winner = probabilities.argmax(axis=1)
        rows = np.arange(len(x))
        outputs = np.zeros_like(probabilities)
        # Never below 0.01, so the winner always stays the argmax.
        outputs[rows, winner] = np.maximum(np.round(probabilities[rows, winner], 2), 0.01)
        return outputs

    return api
