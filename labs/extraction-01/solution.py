"""Reference solution for extraction-01 (instructors' copy): answer queries that do not
look like your users' with misleading labels.

A copy learns from the labels the attacker's queries get, so rounding or hiding
confidences does not stop it (Tramer et al., USENIX Security 2016, already stole models
from labels alone). What the attacker cannot avoid is sending queries: with few images
of the users' distribution, most of its queries come from elsewhere. PRADA (Juuti et al.,
EuroS&P 2019) detects extraction from how a client's queries are distributed;
prediction poisoning (Orekondy et al., ICLR 2020) answers the attacker with outputs that
steer its copy away while keeping the argmax for everyone else. Here there is no client
id, so each query is judged on its own, by a simple statistic of the image fitted on the
model's own training set: the share of its ink drawn in grey rather than in full strokes.
Handwriting scanned like the training set is mostly black or white; images from
elsewhere (resampled, blurred, differently scanned) are not. A query above the 99th
percentile of the training set gets the model's probabilities turned around the
classes by a secret shift (1 to 9 places, drawn from the deployment's seed): a confident,
plausible-looking answer whose label is consistently wrong. A copy that learns from such
answers learns the shifted labels and disagrees with the model; answers shifted at
random per query were measured weaker (score 63.6 on seed 1234: noise averages out, and
the copy still learns from the queries the detector missed). Every other query gets the
model's own probabilities.

Measured on extraction-01, seed 1234: see the README (scores and the copy's fidelity).
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
