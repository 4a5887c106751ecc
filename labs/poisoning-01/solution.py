"""Reference solution for poisoning-01 (instructors' copy).

BadNets poison is a genuine digit of another class, stamped with a trigger and relabelled
as the target. It still looks like its true digit, so its nearest neighbours in pixel
space mostly carry another label. The deep k-NN defence (Peri et al., "Deep k-NN Defense
against Clean-label Data Poisoning Attacks", 2020) drops every sample whose label is not
the plurality label of its k nearest neighbours; here it runs on pixels, in two steps:

1. Find the label(s) that hide poison. Every label has a few samples its neighbours
   outvote (ambiguous digits); the target has hundreds. And the flow is one way: poison
   is outvoted by its true digit, but that digit's own samples are not outvoted by the
   target, while two digits that look alike (4 and 9) outvote each other about equally.
   A label is suspect when its share of outvoted samples, or its net outflow (outvoted
   minus outvoting, per sample), is an outlier among the labels: a modified z-score above
   3.5 (median and median absolute deviation over the labels; Iglewicz and Hoaglin, "How
   to Detect and Handle Outliers", 1993). Measured: the target's larger z-score was 3.9
   to 11.6 on the public lab and 8 variants (full and half size), no other label's
   above 2.6.
2. Inside a suspect label, drop the samples outvoted among their 20 nearest neighbours,
   and repeat: poison also neighbours other poison (same trigger, same label), which
   shields it in the first round; once those are gone, it is outvoted too. Stop when
   nothing changes.

No threshold here was fitted to the lab: the plurality vote and the outlier cut are the
papers' rules, and every cut is relative to the data. Nothing depends on the trigger's
look, its position or the target class. Clean labels are left alone: applying the vote
everywhere would drop about 9% of the clean digits (the median share outvoted per
label, measured), which the score charges for.
"""

import numpy as np

NEIGHBOURS = 10  # k of Peri et al.'s deep k-NN, to find the suspect labels
# k of the vote inside a suspect label. Poison is shielded from the vote while more than
# half its neighbours are fellow poison (same digit, same trigger); a larger k needs more
# of them. Measured on variants 0-7: k = 10 left up to 18 of 400 poison, 20 up to 11.
VOTE_NEIGHBOURS = 20
OUTLIER_Z = 3.5  # Iglewicz and Hoaglin's cut for the modified z-score
MAX_ROUNDS = 10  # rounds of the vote; measured, it settles after 2-4


def nearest_neighbours(x, k):
    """The indices of each sample's k nearest other samples, nearest first, by Euclidean
    distance in pixel space."""
    flat = x.reshape(len(x), -1).astype(np.float32)
    squared = (flat**2).sum(axis=1)
    nearest = np.empty((len(x), k), dtype=np.int64)
    for start in range(0, len(x), 1000):
        block = flat[start : start + 1000]
        distances = squared[start : start + 1000, None] - 2 * block @ flat.T + squared[None, :]
        distances[np.arange(len(block)), np.arange(start, start + len(block))] = np.inf
        candidates = np.argpartition(distances, k, axis=1)[:, :k]
        order = np.argsort(np.take_along_axis(distances, candidates, axis=1), axis=1)
        nearest[start : start + 1000] = np.take_along_axis(candidates, order, axis=1)
    return nearest


def plurality(y, nearest, alive, num_classes):
    """Each sample's plurality label among its neighbours still alive (-1: none alive)."""
    labels = np.where(alive[nearest], y[nearest], -1)
    votes = np.stack([(labels == label).sum(axis=1) for label in range(num_classes)], axis=1)
    return np.where(votes.max(axis=1) > 0, votes.argmax(axis=1), -1)


def modified_z(values):
    median = np.median(values)
    mad = np.median(np.abs(values - median))
    return 0.6745 * (values - median) / mad if mad > 0 else np.zeros_like(values)


def suspect_labels(y, voted, num_classes):
    """Labels whose share of outvoted samples, or net outflow, is an outlier among the labels."""
    outvoted = (voted != y) & (voted >= 0)
    size = np.maximum(np.bincount(y, minlength=num_classes), 1)
    shed = np.bincount(y[outvoted], minlength=num_classes) / size
    gained = np.bincount(voted[outvoted], minlength=num_classes) / size
    return np.maximum(modified_z(shed), modified_z(shed - gained)) > OUTLIER_Z


def sanitize(x, y, tools):
    nearest = nearest_neighbours(x, max(NEIGHBOURS, VOTE_NEIGHBOURS))
    alive = np.ones(len(y), dtype=bool)
    voted = plurality(y, nearest[:, :NEIGHBOURS], alive, tools.num_classes)
    suspect = suspect_labels(y, voted, tools.num_classes)[y]
    nearest = nearest[:, :VOTE_NEIGHBOURS]
    for _ in range(MAX_ROUNDS):
        voted = plurality(y, nearest, alive, tools.num_classes)
        drop = alive & suspect & (voted != y) & (voted >= 0)
        if not drop.any():
            break
        alive &= ~drop
    return np.flatnonzero(alive)
