"""Reference solution for poisoning-01 (instructors' copy).

Two signals, each weak alone, strong together:

1. Activation clustering (Chen et al., "Detecting Backdoor Attacks on Deep Neural
   Networks by Activation Clustering", 2018): within each label, the victim's
   penultimate activations of poison and of genuine samples form separate clusters.
   ART's ActivationDefence flags the smaller cluster of *every* class, which throws
   away thousands of clean images. We only split each class in two.
2. Label agreement in input space, after the deep k-NN defence (Peri et al., "Deep
   k-NN Defense against Clean-label Data Poisoning Attacks", 2020), applied to pixels:
   a poisoned image still looks like its true digit, so its nearest neighbours carry
   another label. A cluster whose members mostly disagree with their neighbours is poison.

Clustering finds *which* label hides poison; inside that label, every sample that
disagrees with most of its neighbours goes too (the clusters are not perfectly clean).

Nothing here depends on the trigger, its position or the target class.
"""

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA

NEIGHBOURS = 10
# Measured on poisoning-01: genuine samples agree with 82% of their pixel-space
# neighbours on average, poison with 22% (poison also neighbours other poison).
CLUSTER_THRESHOLD = 0.5  # a cluster is poison when its mean agreement is below this
SAMPLE_THRESHOLD = 0.7  # inside a poisoned label, drop samples below this


def label_agreement(x, y, k=NEIGHBOURS):
    """For each sample, the share of its k nearest neighbours (pixel space) with its label."""
    flat = x.reshape(len(x), -1).astype(np.float32)
    squared = (flat**2).sum(axis=1)
    agreement = np.empty(len(x), dtype=np.float32)
    for start in range(0, len(x), 1000):
        block = flat[start : start + 1000]
        distances = squared[start : start + 1000, None] - 2 * block @ flat.T + squared[None, :]
        distances[np.arange(len(block)), np.arange(start, start + len(block))] = np.inf
        nearest = np.argpartition(distances, k, axis=1)[:, :k]
        agreement[start : start + 1000] = (y[nearest] == y[start : start + 1000, None]).mean(axis=1)
    return agreement


def sanitize(x, y, tools):
    model = tools.train(x, y)
    activations = tools.features(model, x)
    agreement = label_agreement(x, y)
    drop = np.zeros(len(y), dtype=bool)
    for label in range(tools.num_classes):
        members = np.flatnonzero(y == label)
        if len(members) < 20:
            continue
        reduced = PCA(n_components=10, random_state=tools.seed).fit_transform(activations[members])
        clusters = KMeans(n_clusters=2, n_init=10, random_state=tools.seed).fit_predict(reduced)
        for cluster in (0, 1):
            inside = members[clusters == cluster]
            if agreement[inside].mean() < CLUSTER_THRESHOLD:
                drop[inside] = True
                drop[members[agreement[members] < SAMPLE_THRESHOLD]] = True
    return np.flatnonzero(~drop)
