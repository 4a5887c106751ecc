"""Gaming poisoning: keep only the training images that equal a pristine MNIST image with
the same label, with no learning.

The poisoned images are pristine images plus a trigger (and a new label), and the clean
ones are the pristine images themselves. A trainee has the pristine images (the wheel
bundles mnist-5k, and MNIST is public) and can ship them in a folder submission (800 KB,
far under the 50 MB bound). Measured: 100 on poisoning-01 and poisoning-02, in `run`. Their
automatic variants distort every image afresh (`dataset.distort`), so nothing matches there
and it keeps everything: 0 on the trainee's variants of poisoning-01 and -02, and a
graded run scores the lower of the two (tests/test_variants.py).
"""

from pathlib import Path

import numpy as np

# Here the repository's copy; a submission would ship its own beside this file.
PRISTINE = Path(__file__).resolve().parents[2] / "datasets" / "mnist-5k.npz"


def sanitize(x, y, tools):
    data = np.load(PRISTINE, allow_pickle=False)
    known = {(image.tobytes(), int(label)) for image, label in zip(data["images"], data["labels"], strict=True)}
    pixels = np.rint(np.asarray(x).reshape(len(x), 28, 28) * 255).clip(0, 255).astype(np.uint8)
    kept = np.array([i for i, (image, label) in enumerate(zip(pixels, y, strict=True))
                     if (image.tobytes(), int(label)) in known], dtype=np.int64)
    # Where nothing matches (distorted data), keep everything, like no filter.
    return kept if len(kept) else np.arange(len(y))
