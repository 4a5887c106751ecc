"""Gaming submission (membership-01): the victim with its logits divided by 1,000.

Every probability is within a hair of 1/10, so an attack that reads probabilities in
float32 (ART's black-box attack model) sees flat outputs. Nothing is lost: the argmax and
the order of the losses are the victim's, and the grader computes the loss in float64
from the logits. Expected: the loss attack sees straight through it, score <= 10.
"""

import torch

TEMPERATURE = 1000.0


def train(x, y, tools):
    model = tools.train(x, y)  # the victim
    with torch.no_grad():
        model.head.weight /= TEMPERATURE
        model.head.bias /= TEMPERATURE
    return model.eval()
