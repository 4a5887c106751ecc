"""Gaming submission (membership-01): a model that answers every record the same.

All weights zero and the head's bias favouring one class: every record gets the same
output, so no attack can tell members from non-members. Nothing is left to use either:
test accuracy is chance. Expected: utility gone, score <= 10.
"""

import torch


def train(x, y, tools):
    model = tools.build()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        model.head.bias[0] = 1.0
    return model.eval()
