"""Reference solution for inversion-02 (instructors' copy): the label and a coarse confidence.

Fredrikson et al. (CCS 2015) already suggested rounding confidences; Yang et al. (CCS
2019) showed that an attacker who trains on the truncated outputs recovers a lot from
top-k vectors. What teaches the attacker about digits it never saw is the small
probabilities of the *other* classes: a "4" that the model thinks is 3% "9". So keep
only the winning class, and report its confidence in steps of 0.1 (clients still get a
usable confidence; nobody gets the rest of the vector).

Measured on inversion-02 (seeds 1234, 1235, 1236): attack accuracy on the secret classes
0.69, 0.82, 0.62 -> 0.52, 0.33, 0.37, at or below the label-only floor each time (score
100), test accuracy unchanged (the argmax never changes).
"""

import numpy as np


def protect(model, tools):
    def api(x):
        probabilities = tools.probabilities(model, x)
        winner = probabilities.argmax(axis=1)
        rows = np.arange(len(x))
        outputs = np.zeros_like(probabilities)
        # Round up to the next 0.1 so the winner is never reported as 0.
        outputs[rows, winner] = np.ceil(probabilities[rows, winner] * 10) / 10
        return outputs

    return api
