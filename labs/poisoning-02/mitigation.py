"""Your mitigation for poisoning-02: the poison carries correct labels this time.

Run it:    secureml run poisoning-02 --mitigation labs/poisoning-02/mitigation.py
Read:      labs/poisoning-02/README.md

This starter runs, but scores low: it applies the poisoning-01 idea (drop samples whose
label disagrees with the victim), which cannot work when every label is correct.
"""

import numpy as np


def sanitize(x, y, tools):
    """Return the indices of the training samples to keep.

    x: float32 array (N, 1, 28, 28) in [0, 1]; y: int64 array (N,) of correct labels.
    tools.train(x, y), tools.features(model, x), tools.predict(model, x), tools.num_classes
    """
    model = tools.train(x, y)
    disagrees = tools.predict(model, x) != y

    # TODO: the poisoned images *are* of their labelled class. What did the attacker
    # have to do to them so that the model would rely on the patch instead?
    return np.flatnonzero(~disagrees)
