"""Gaming submission (extraction): the earlier reference. It flags queries whose share of
grey ink is above the training set's 99th percentile, which every page of the grader's
attacker had as sent: a statistic of one scanner, not a defence. An attacker who has read it
binarises its pages (no grey left) or maps their ink onto its own labelled digits' grey
levels; the grader's attacker does both, and the most faithful copy counts. Measured on
extraction-01, seed 1234: 92.0 before the attacker presented its pages three ways, 0.0 after.
"""

import numpy as np

# A pixel between these counts as grey; MNIST's strokes are mostly 0 or close to 1.
GREY = (0.1, 0.9)
# Share of the training images flagged as suspicious: honest users flagged lose their
# answer, so this is about the accuracy the API gives up.
FALSE_ALARMS = 0.01


def grey_share(x):
    """The share of a digit's ink (pixels above 0.1) that is grey."""
    flat = x.reshape(len(x), -1)
    ink = (flat > GREY[0]).sum(axis=1)
    grey = ((flat > GREY[0]) & (flat < GREY[1])).sum(axis=1)
    return grey / np.maximum(ink, 1)


def protect(model, tools):
    x_train, _ = tools.training_set()
    threshold = np.quantile(grey_share(x_train), 1 - FALSE_ALARMS)
    shift = 1 + tools.seed % (tools.num_classes - 1)

    def api(x):
        probabilities = tools.probabilities(model, x)
        suspicious = grey_share(x) > threshold
        probabilities[suspicious] = np.roll(probabilities[suspicious], shift, axis=1)
        return probabilities

    return api
