"""Your mitigation for extraction-01: change what the prediction API returns.

Run it:    secureml run extraction-01 --mitigation labs/extraction-01/mitigation.py
Read:      labs/extraction-01/README.md

This starter runs, but scores low: it answers with the label and its confidence rounded
to one decimal, a common first idea ("fewer digits give less away"). The copy does not
need the digits: the attacker trains it on your labels, and those are unchanged.
"""

import numpy as np


def protect(model, tools):
    """Return the API: a function from images (B, 1, 28, 28) to output vectors (B, 10).

    model: the deployed classifier (a torch module returning logits).
    tools.probabilities(model, x) -> (B, 10) softmax vectors, what the API returns today.
    tools.training_set() -> (x, y): the images your model was trained on (what honest
      users' queries look like).
    Clients read your outputs as probabilities (mass you leave out is spread evenly over
    the classes); they need the right argmax and confidences they can rely on.
    """

    def api(x):
        probabilities = tools.probabilities(model, x)
        winner = probabilities.argmax(axis=1)
        rows = np.arange(len(x))
        outputs = np.zeros_like(probabilities)
        # TODO: the label is still the model's label, for every query.
        outputs[rows, winner] = np.maximum(np.round(probabilities[rows, winner], 1), 0.1)
        return outputs

    return api
