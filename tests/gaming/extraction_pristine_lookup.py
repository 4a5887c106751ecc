"""Gaming extraction: answer honestly only the queries that equal a pristine MNIST image.

The honest users send images of the dataset as they are; the attacker's pages are its
own digits rescanned, so none of them is in the dataset. A trainee has the pristine images
(the wheel bundles mnist-5k, and MNIST is public) and can ship them in a folder submission.
Measured: 100 on extraction-01 (seed 1234), the copy's fidelity 0.13, and 0 on its
automatic variant, whose images are distorted afresh (tests/test_variants.py); a graded
run scores the lower of the two.
"""

from pathlib import Path

import numpy as np

# Here the repository's copy; a submission would ship its own beside this file.
PRISTINE = Path(__file__).resolve().parents[2] / "datasets" / "mnist-5k.npz"


def protect(model, tools):
    known = {image.tobytes() for image in np.load(PRISTINE, allow_pickle=False)["images"]}

    def api(x):
        probabilities = tools.probabilities(model, x)
        pixels = np.rint(np.asarray(x).reshape(len(x), 28, 28) * 255).clip(0, 255).astype(np.uint8)
        foreign = np.array([image.tobytes() not in known for image in pixels])
        probabilities[foreign] = np.roll(probabilities[foreign], 3, axis=1)
        return probabilities

    return api
