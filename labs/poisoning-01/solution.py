"""Reference solution for poisoning-01 (instructors' copy).

BadNets poison is a genuine digit of another class, stamped with a trigger and relabelled
as the target. Nothing here looks at the trigger: it may be a bright mark, a dark square
over the digit or noise blended into the whole image, anywhere. Two detectors, then a vote.

1. The deep k-NN vote (Peri et al., "Deep k-NN Defense against Clean-label Data Poisoning
   Attacks", 2020), on pixels. Poison still looks like its true digit, so its nearest
   neighbours mostly carry another label. The suspect label is the one whose share of
   outvoted samples, or net outflow (outvoted minus outvoting, per sample), is the largest
   outlier among the labels: a modified z-score above 3.5 (Iglewicz and Hoaglin, "How to
   Detect and Handle Outliers", 1993). Two digits that look alike (4 and 9) outvote each
   other about equally; poison flows one way. The attacker has one target, so only the
   largest outlier is suspect: on distorted images a hard digit (2, 8) can be an outlier
   too, and voting inside it dropped another 5.6% of the clean digits on a half-size variant.
2. Activation clustering (Chen et al., "Detecting Backdoor Attacks on Deep Neural
   Networks by Activation Clustering", 2018): each label's samples split in two by
   k-means on their top 10 principal components (and in three), once on the victim's
   penultimate activations and once on the pixels. A trigger that changes many pixels (a
   blend, a dark square) makes poison its own nearest neighbours, which blinds the vote;
   but it also moves the poison together, so it comes out as a cluster. ART's
   ActivationDefence calls the smaller cluster of every label poison, which throws away
   clean styles of every digit. Here a cluster is judged by what it looks like among the
   *other* labels (the plurality label of each sample's 10 nearest images of other
   labels): poison is digits of every other class, so its look-alikes are spread over all
   of them, where a real style of a digit resembles a few (a 4 looks like a 9). The
   attacker has one target, so the most mixed cluster of all is taken: one in which every
   other label has at least half its even share, or else whose look-alike entropy is
   above MIXED of the largest possible. Measured on 35 variants: pure poison clusters
   2.14-2.19 nats with every label present, clean clusters up to 2.00 (never with every
   label), the largest possible log 9 = 2.20. A cluster that mixes poison with the
   target's own digits is split again while one half is more mixed than the whole and the
   other is not.
3. The vote, round after round inside the suspect labels: drop every sample whose label is
   not the plurality label of its 20 nearest neighbours still kept; poison also
   neighbours other poison, which shields it until those are gone. A cluster of poison is
   dropped first, and its label is the suspect, when every other label is among its
   look-alikes, or when the vote found no suspect label (blends and dark squares); else
   the vote's suspect stands (small marks, whose clusters often mix poison and clean).

No threshold here was fitted to a trigger: the entropy cut is a share of its largest
value; the plurality vote and the outlier cut are the papers' rules. Measured at full size
(victim ASR 0.74-1.00): 87.2-99.7 on 48 variants, 12 of each look the automatic variants
draw; 89.7-95.4 on the automatic variants 1, 2, 4, 7 and 10-13; 96.8-97.5 on the public
trigger over 3 seeds. Since variants distort their images (alpha 8 px): 89.1-99.1 on the
automatic variants 0-15 and 90.2 on the trainee's (5-7 measured before the vote suspected
only the largest outlier, which left the kept set unchanged on the public lab, the
trainee's variant and 0-4). The vote alone scored 0 on every blend and dark square. Clean
labels are left alone: applying the vote everywhere would drop about 9% of the clean digits
(the median share outvoted per label, measured), which the score charges for.
"""

import itertools

import numpy as np

NEIGHBOURS = 10  # k of Peri et al.'s deep k-NN: for the suspect labels and the look-alikes
# k of the vote inside a suspect label. Poison is shielded from the vote while more than
# half its neighbours are fellow poison (same digit, same trigger); a larger k needs more
# of them. Measured on variants 0-7: k = 10 left up to 18 of 400 poison, 20 up to 11.
VOTE_NEIGHBOURS = 20
OUTLIER_Z = 3.5  # Iglewicz and Hoaglin's cut for the modified z-score
MAX_ROUNDS = 10  # rounds of the vote; measured, it settles after 2-4
MIXED = 0.9  # share of the largest possible look-alike entropy that marks a cluster as poison
CLUSTER_MIN = 20  # smaller clusters are not judged: their entropy is too noisy
DIMENSIONS = 10  # principal components the clustering sees (as ART's ActivationDefence)
# Each label is split in two and in three: a blend's poison measured as one cluster of 392
# poison and 3 clean in three parts, where two parts mixed 334 poison with 179 clean digits.
PARTS = (2, 3)


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
    """The label whose share of outvoted samples, or net outflow, is the largest outlier among
    the labels (none if no label is an outlier). The attacker has one target; a digit that
    is merely hard (an 8 on distorted images) may be an outlier too, and voting inside it
    drops its clean samples."""
    outvoted = (voted != y) & (voted >= 0)
    size = np.maximum(np.bincount(y, minlength=num_classes), 1)
    shed = np.bincount(y[outvoted], minlength=num_classes) / size
    gained = np.bincount(voted[outvoted], minlength=num_classes) / size
    z = np.maximum(modified_z(shed), modified_z(shed - gained))
    return (z > OUTLIER_Z) & (z == z.max())


def look_alikes(x, y, rows, label, k, num_classes):
    """For each of `rows` (all labelled `label`): the plurality label of its k nearest images
    of the *other* labels, by Euclidean distance in pixel space."""
    flat = x.reshape(len(x), -1).astype(np.float32)
    others = np.flatnonzero(y != label)
    squared = (flat**2).sum(axis=1)
    distances = squared[rows, None] - 2 * flat[rows] @ flat[others].T + squared[None, others]
    nearest = others[np.argpartition(distances, k, axis=1)[:, :k]]
    return plurality(y, nearest, np.ones(len(y), dtype=bool), num_classes)


def spread(labels, label, num_classes):
    """How evenly `labels` (look-alikes of samples labelled `label`) cover the other labels:
    whether each has at least half of an even share, and their entropy in nats."""
    share = np.bincount(labels, minlength=num_classes) / len(labels)
    every = bool(np.all(np.delete(share, label) >= 0.5 / (num_classes - 1)))
    present = share[share > 0]
    return every, float(-(present * np.log(present)).sum())


def split(points, seed, parts=2):
    """k-means with `parts` clusters on the top principal components."""
    from sklearn.cluster import KMeans

    centred = points - points.mean(axis=0)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    return KMeans(parts, n_init=10, random_state=seed).fit_predict(centred @ components[:DIMENSIONS].T)


def most_mixed_cluster(x, y, tools):
    """The rows of the most mixed cluster (none if no cluster is mixed enough), and whether
    every other label is among its look-alikes. It is narrowed to one of its halves while
    that half is more mixed than the whole and the other half is not mixed: poison and the
    target's own digits split into purer poison and plain digits, while pure poison splits
    by digit shape into halves less mixed than the whole, and stays whole."""
    spaces = [tools.features(tools.train(x, y), x), x.reshape(len(x), -1)]
    alike = np.full(len(y), -1)

    def mixed(rows):
        """How mixed a cluster's look-alikes are: (every other label among them, entropy),
        or None for a cluster too small or too plain to be poison."""
        if len(rows) < CLUSTER_MIN:
            return None
        every, entropy = spread(alike[rows], y[rows[0]], tools.num_classes)
        return (every, entropy) if every or entropy > MIXED * np.log(tools.num_classes - 1) else None

    best, most = np.array([], dtype=np.int64), None
    for label in range(tools.num_classes):
        rows = np.flatnonzero(y == label)
        if len(rows) < 2 * CLUSTER_MIN:
            continue
        alike[rows] = look_alikes(x, y, rows, label, NEIGHBOURS, tools.num_classes)
        for space, parts in itertools.product(spaces, PARTS):
            clusters = split(space[rows], tools.seed, parts)
            for members in (rows[clusters == part] for part in range(parts)):
                score = mixed(members)
                if score is not None and (most is None or score > most):
                    best, most = members, score
    while len(best) >= 2 * CLUSTER_MIN:
        purer = []
        for space in spaces:
            clusters = split(space[best], tools.seed)
            halves = [(mixed(half), half) for half in (best[clusters == 0], best[clusters == 1])]
            candidates = [(score, half) for score, half in halves if score is not None]
            if len(candidates) == 1 and candidates[0][0] > most:
                purer.append(candidates[0])
        if not purer:
            break
        most, best = max(purer, key=lambda candidate: candidate[0])
    return best, bool(most and most[0])


def vote(y, nearest, alive, suspect, num_classes):
    """The deep k-NN vote in the suspect labels, round after round: drop what is outvoted."""
    for _ in range(MAX_ROUNDS):
        voted = plurality(y, nearest, alive, num_classes)
        drop = alive & suspect & (voted != y) & (voted >= 0)
        if not drop.any():
            break
        alive &= ~drop
    return alive


def sanitize(x, y, tools):
    nearest = nearest_neighbours(x, max(NEIGHBOURS, VOTE_NEIGHBOURS))
    alive = np.ones(len(y), dtype=bool)
    suspect = suspect_labels(y, plurality(y, nearest[:, :NEIGHBOURS], alive, tools.num_classes), tools.num_classes)
    poison, like_every_label = most_mixed_cluster(x, y, tools)
    if len(poison) and (like_every_label or not suspect.any()):
        alive[poison] = False
        suspect = np.arange(tools.num_classes) == y[poison[0]]
    return np.flatnonzero(vote(y, nearest[:, :VOTE_NEIGHBOURS], alive, suspect[y], tools.num_classes))
