"""Gaming submission (extraction-01): ART's ReverseSigmoid output perturbation (Lee et al.,
"Defending against NN model stealing attacks using deceptive perturbations", IEEE S&P
Workshops 2019), the textbook answer to model extraction.

It poisons the confidences of every answer, but leaves the labels as they were: the
attacker that trains its copy on the labels sees straight through it. Expected: score
at most 10.
"""

import numpy as np
from art.defences.postprocessor import ReverseSigmoid

# ART's example values; a larger beta perturbs more.
PERTURBATION = ReverseSigmoid(beta=1.0, gamma=0.1)


def protect(model, tools):
    def api(x):
        # ART takes the log of p / (1 - p): a probability of exactly 1 divides by zero.
        with np.errstate(divide="ignore"):
            perturbed = PERTURBATION(tools.probabilities(model, x))
        return np.clip(perturbed, 0.0, 1.0).astype(np.float32)

    return api
