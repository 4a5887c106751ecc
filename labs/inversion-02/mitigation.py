"""Your mitigation for inversion-02: change what the prediction API returns.

Run it:    secureml run inversion-02 --mitigation labs/inversion-02/mitigation.py
Read:      labs/inversion-02/README.md

This starter runs, but scores low: it softens the probabilities with a temperature, a
common first idea ("less confident answers give less away"). The answers look different,
but the softening is the same for every answer and can be undone: the attacker learns it
from its own queries and reads exactly what it read before.
"""

import numpy as np

TEMPERATURE = 2.0


def protect(model, tools):
    """Return the API: a function from images (B, 1, 28, 28) to output vectors (B, 10).

    model: the deployed classifier (a torch module returning logits).
    tools.probabilities(model, x) -> (B, 10) softmax vectors, what the API returns today.
    tools.num_classes, tools.seed
    Clients read your outputs as probabilities (mass you leave out is spread evenly over
    the classes); they need the right argmax and confidences they can rely on.
    """

    def api(x):
        probabilities = tools.probabilities(model, x).astype(np.float64)
        # TODO: every probability is still there, only re-encoded.
        softened = probabilities ** (1.0 / TEMPERATURE)
        return (softened / softened.sum(axis=1, keepdims=True)).astype(np.float32)

    return api
