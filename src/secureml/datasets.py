"""The dataset registry: bundled data checked by sha256, torchvision data from a local root.

Every loader returns the same thing: float32 images in [0, 1], channels first (N, C, H, W),
and int64 labels. `load_split` then draws a seeded, stratified train/test split and hashes
exactly the arrays a run uses, so results can record what they were computed on.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from secureml.cache import arrays_sha256
from secureml.errors import DatasetError
from secureml.paths import bundled_dir

if TYPE_CHECKING:
    import numpy as np

    from secureml.scenario import DatasetConfig


@dataclass(frozen=True)
class Pool:
    """All the labelled images a dataset offers, before a scenario splits them."""

    x_train: np.ndarray
    y_train: np.ndarray
    # Datasets with an official test split keep it apart; bundled pools have none.
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    description: str
    shape: tuple[int, int, int]
    num_classes: int
    load: Callable[[Path | None], Pool] = field(repr=False)
    class_names: tuple[str, ...] = tuple(str(digit) for digit in range(10))
    bundled: bool = False


@dataclass(frozen=True)
class Split:
    """The arrays one scenario trains and tests on."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    class_names: tuple[str, ...]
    sha256: str

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


# --------------------------------------------------------------------------- bundled data

# sha256 of datasets/mnist-5k.npz as committed (see datasets/mnist-5k.md).
MNIST_5K_SHA256 = "246e0c30eeea57c8d0037d3f38c8e00651ec204cc61b8022563e9aeeb9d756f4"
# sha256 of scikit-learn's digits arrays (images as float64 bytes, then int64 targets),
# measured with scikit-learn 1.9.1; the data has not changed since it was added in 2010.
DIGITS_SHA256 = "f6d9e39f37dc45d327f6db33428ee58970ccceabb2535a5c179de35886b70443"


def _load_mnist_5k(_root: Path | None) -> Pool:
    import numpy as np

    path = bundled_dir() / "mnist-5k.npz"
    if not path.is_file():
        raise DatasetError(
            "the bundled mnist-5k dataset is missing",
            file=str(path),
            fix="restore it with `git checkout -- datasets/mnist-5k.npz` in a clone (or rebuild it "
            "with datasets/make_mnist_5k.py), or `pip install --force-reinstall secureml`",
        )
    digest = file_sha256(path)
    if digest != MNIST_5K_SHA256:
        raise DatasetError(
            "the bundled mnist-5k dataset does not match its recorded sha256",
            file=str(path),
            expected=MNIST_5K_SHA256,
            found=digest,
            fix="restore it with `git checkout -- datasets/mnist-5k.npz` in a clone, "
            "or `pip install --force-reinstall secureml`",
        )
    with np.load(path, allow_pickle=False) as archive:
        images, labels = archive["images"], archive["labels"]
    return Pool(_to_float_nchw(images, 255.0), labels.astype(np.int64))


def _load_digits(_root: Path | None) -> Pool:
    import numpy as np
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.astype(np.float64)
    labels = bunch.target.astype(np.int64)
    digest = hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()
    if digest != DIGITS_SHA256:
        raise DatasetError(
            "scikit-learn's digits data does not match its recorded sha256",
            expected=DIGITS_SHA256,
            found=digest,
            fix="reinstall scikit-learn (`pip install --force-reinstall scikit-learn`)",
        )
    # Pixel values run from 0 to 16 in this dataset.
    return Pool(_to_float_nchw(images, 16.0), labels)


# --------------------------------------------------------------------------- torchvision data


def data_root(explicit: Path | None) -> Path | None:
    if explicit is not None:
        return explicit
    env = os.environ.get("SECUREML_DATA")
    return Path(env) if env else None


def _torchvision(name: str, class_name: str, fetch_hint: str):
    def load(root: Path | None) -> Pool:
        import numpy as np

        if root is None:
            raise DatasetError(
                f"the {name} dataset needs a local data root",
                fix=f"pass --data-root DIR or set SECUREML_DATA=DIR, where DIR holds {fetch_hint}. "
                f"To fetch it on a machine with internet: python -c \"import torchvision; "
                f"torchvision.datasets.{class_name}('DIR', download=True)\", then copy DIR here.",
            )
        train = _open_torchvision(name, class_name, root, train=True, fetch_hint=fetch_hint)
        test = _open_torchvision(name, class_name, root, train=False, fetch_hint=fetch_hint)
        scale = 255.0
        return Pool(
            _to_float_nchw(np.asarray(train.data), scale),
            np.asarray(train.targets, dtype=np.int64),
            _to_float_nchw(np.asarray(test.data), scale),
            np.asarray(test.targets, dtype=np.int64),
        )

    return load


def _open_torchvision(name: str, class_name: str, root: Path, *, train: bool, fetch_hint: str):
    import torchvision.datasets as tv

    dataset_class = getattr(tv, class_name)
    if class_name == "CIFAR10":
        dataset_class = _cifar_without_md5(dataset_class)
    try:
        return dataset_class(str(root), train=train, download=False)
    except RuntimeError as error:
        raise DatasetError(
            f"the {name} dataset was not found under the data root ({error})",
            file=str(root),
            expected=fetch_hint,
            fix=f"put the files there, or fetch them on a machine with internet with "
            f"torchvision.datasets.{class_name}('{root}', download=True) and copy the folder",
        ) from error


def _cifar_without_md5(cifar10):
    """CIFAR-10 as torchvision reads it, checking files exist instead of their md5.

    torchvision pins the md5 of the full official release, which would reject the small
    files our tests write in the same on-disk format. The arrays a run uses are hashed
    into its results anyway. The data root is the instructor's, never a trainee's.
    """

    class LocalCIFAR10(cifar10):
        def _check_integrity(self) -> bool:
            folder = Path(self.root) / self.base_folder
            names = [entry[0] for entry in self.train_list + self.test_list]
            return all((folder / name).is_file() for name in names)

        def _load_meta(self) -> None:
            # Class names come from our registry; batches.meta is not needed.
            self.classes = list(DATASETS["cifar10"].class_names)
            self.class_to_idx = {name: index for index, name in enumerate(self.classes)}

    return LocalCIFAR10


def _to_float_nchw(images, scale: float):
    import numpy as np

    images = np.asarray(images, dtype=np.float32) / np.float32(scale)
    if images.ndim == 3:  # (N, H, W): one channel
        return np.ascontiguousarray(images[:, None, :, :])
    if images.ndim == 4 and images.shape[-1] in (1, 3):  # (N, H, W, C) as torchvision's CIFAR
        return np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    raise DatasetError("unexpected image array shape", found=str(images.shape))


DATASETS: dict[str, DatasetSpec] = {
    "digits": DatasetSpec(
        "digits",
        "scikit-learn's 1,797 8x8 handwritten digits (bundled with scikit-learn)",
        (1, 8, 8),
        10,
        _load_digits,
        bundled=True,
    ),
    "mnist-5k": DatasetSpec(
        "mnist-5k",
        "5,000 real MNIST digits, 500 per class (bundled: datasets/mnist-5k.npz)",
        (1, 28, 28),
        10,
        _load_mnist_5k,
        bundled=True,
    ),
    "mnist": DatasetSpec(
        "mnist",
        "MNIST through torchvision, from a local root",
        (1, 28, 28),
        10,
        _torchvision("mnist", "MNIST", "MNIST/raw/train-images-idx3-ubyte and the other raw files"),
    ),
    "fashion-mnist": DatasetSpec(
        "fashion-mnist",
        "Fashion-MNIST through torchvision, from a local root",
        (1, 28, 28),
        10,
        _torchvision(
            "fashion-mnist",
            "FashionMNIST",
            "FashionMNIST/raw/train-images-idx3-ubyte and the other raw files",
        ),
        class_names=(
            "T-shirt", "trouser", "pullover", "dress", "coat",
            "sandal", "shirt", "sneaker", "bag", "boot",
        ),
    ),
    "cifar10": DatasetSpec(
        "cifar10",
        "CIFAR-10 through torchvision, from a local root",
        (3, 32, 32),
        10,
        _torchvision("cifar10", "CIFAR10", "cifar-10-batches-py/data_batch_1..5 and test_batch"),
        class_names=(
            "airplane", "automobile", "bird", "cat", "deer",
            "dog", "frog", "horse", "ship", "truck",
        ),
    ),
}


def load_split(config: DatasetConfig, seed: int, root: Path | None = None) -> Split:
    """Draw the scenario's seeded, stratified train/test split and hash it."""
    import numpy as np

    spec = DATASETS[config.name]
    pool = spec.load(data_root(root))
    rng = np.random.default_rng(seed)
    if pool.x_test is None or pool.y_test is None:
        train_idx, test_idx = stratified_split(
            pool.y_train, config.train_size, config.test_size, rng, dataset=config.name
        )
        x_train, y_train = pool.x_train[train_idx], pool.y_train[train_idx]
        x_test, y_test = pool.x_train[test_idx], pool.y_train[test_idx]
    else:
        train_idx, _ = stratified_split(pool.y_train, config.train_size, 0, rng, dataset=config.name)
        test_idx, _ = stratified_split(pool.y_test, config.test_size, 0, rng, dataset=config.name)
        x_train, y_train = pool.x_train[train_idx], pool.y_train[train_idx]
        x_test, y_test = pool.x_test[test_idx], pool.y_test[test_idx]
    if config.distort is not None:
        from secureml.randomness import generator

        x_train = elastic_distortion(x_train, config.distort.alpha, config.distort.sigma,
                                     generator(seed, "distort", "train"))
        x_test = elastic_distortion(x_test, config.distort.alpha, config.distort.sigma,
                                    generator(seed, "distort", "test"))
    return Split(
        name=config.name,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        num_classes=spec.num_classes,
        class_names=spec.class_names,
        sha256=arrays_sha256(x_train, y_train, x_test, y_test),
    )


def elastic_distortion(images: np.ndarray, alpha: float, sigma: float, rng) -> np.ndarray:
    """Each image (N, C, H, W) resampled along a smooth random displacement field of its own
    (Simard, Steinkraus & Platt, "Best practices for convolutional neural networks applied to
    visual document analysis", ICDAR 2003: alpha 34 and sigma 4 on MNIST keep every digit
    legible). Bilinear, edges extended; the channels of an image move together. Done in
    chunks, so that the displacement fields of a large training set stay small."""
    import numpy as np
    from scipy.ndimage import gaussian_filter, map_coordinates

    count, channels, height, width = images.shape
    out = np.empty_like(images)
    for start in range(0, count, _DISTORTION_CHUNK):
        chunk = images[start : start + _DISTORTION_CHUNK]
        size = len(chunk)
        rows, cols = (
            grid + alpha * gaussian_filter(rng.uniform(-1.0, 1.0, (size, height, width)),
                                           sigma=(0, sigma, sigma), mode="constant")
            for grid in np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
        )
        index = np.broadcast_to(np.arange(size)[:, None, None], rows.shape)
        for channel in range(channels):
            out[start : start + size, channel] = map_coordinates(
                chunk[:, channel], (index, rows, cols), order=1, mode="nearest"
            )
    return np.clip(out, 0.0, 1.0, out=out)


# Images distorted at once: a chunk's fields and coordinates take about 30 MB at 32x32.
_DISTORTION_CHUNK = 1024


def stratified_split(labels, first_size: int, second_size: int, rng, *, dataset: str = ""):
    """Two disjoint index sets with (close to) the class proportions of `labels`, shuffled."""
    import numpy as np

    total = first_size + second_size
    if total > len(labels):
        raise DatasetError(
            "the scenario asks for more samples than the dataset has",
            field="dataset.train_size + dataset.test_size",
            expected=f"at most {len(labels)} for {dataset or 'this dataset'}",
            found=str(total),
            fix="lower train_size or test_size",
        )
    classes, counts = np.unique(labels, return_counts=True)
    chosen_first: list[np.ndarray] = []
    chosen_second: list[np.ndarray] = []
    # Largest-remainder allocation so the sizes are exact and proportional per class.
    for wanted, bucket in ((first_size, chosen_first), (second_size, chosen_second)):
        shares = counts * wanted / len(labels)
        quota = np.floor(shares).astype(int)
        quota[np.argsort(-(shares - quota), kind="stable")[: wanted - quota.sum()]] += 1
        bucket.append(quota)
    first_quota, second_quota = chosen_first[0], chosen_second[0]
    first, second = [], []
    for label, need_first, need_second in zip(classes, first_quota, second_quota, strict=True):
        members = rng.permutation(np.flatnonzero(labels == label))
        first.append(members[:need_first])
        second.append(members[need_first : need_first + need_second])
    return rng.permutation(np.concatenate(first)), rng.permutation(np.concatenate(second))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
