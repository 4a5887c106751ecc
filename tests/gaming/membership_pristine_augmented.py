"""Gaming membership, adapted to distorted variants: train the victim's recipe on the
members and on every pristine image of the dataset, as shipped and twice elastically
distorted with the variants' own (public) parameters.

Every image a membership variant draws is a distorted copy of a shipped image, and the
non-members and test images are among them. Copies distorted alike teach the model those
records nearly as well as the members: measured 83.5 on membership-01's automatic variant
(trainee seed; test accuracy 0.981 against the victim's 0.851, advantage 0.087 against
0.299). A known hole, not closed yet: tests/test_known_holes.py records it.
"""

from pathlib import Path

import numpy as np

# Here the repository's copy; a submission would ship its own beside this file.
PRISTINE = Path(__file__).resolve().parents[2] / "datasets" / "mnist-5k.npz"


def train(x, y, tools):
    from secureml.datasets import elastic_distortion
    from secureml.scenario import VARIANT_DISTORTION

    data = np.load(PRISTINE, allow_pickle=False)
    images = (data["images"].astype(np.float32) / 255.0).reshape(-1, *x.shape[1:])
    labels = data["labels"].astype(np.int64)
    rng = np.random.default_rng(0)
    copies = [elastic_distortion(images, VARIANT_DISTORTION["alpha"], VARIANT_DISTORTION["sigma"], rng)
              for _ in range(2)]
    return tools.train(np.concatenate([x, images, *copies]), np.concatenate([y, *[labels] * 3]))
