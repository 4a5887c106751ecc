"""Dataset loaders: bundled data checked by sha256, torchvision data from a local root."""

from __future__ import annotations

import gzip
import pickle
import shutil
import struct

import numpy as np
import pytest

from conftest import REPO
from secureml import datasets
from secureml.datasets import DATASETS, load_split, stratified_split
from secureml.errors import DatasetError
from secureml.scenario import DatasetConfig


def test_mnist_5k_is_real_mnist_500_per_class_in_unit_range():
    pool = DATASETS["mnist-5k"].load(None)
    assert pool.x_train.shape == (5000, 1, 28, 28) and pool.x_train.dtype == np.float32
    assert pool.x_train.min() == 0.0 and pool.x_train.max() == 1.0
    assert np.bincount(pool.y_train).tolist() == [500] * 10


def test_digits_are_scaled_from_0_16_to_unit_range():
    pool = DATASETS["digits"].load(None)
    assert pool.x_train.shape == (1797, 1, 8, 8)
    assert pool.x_train.max() == 1.0 and pool.x_train.min() == 0.0


def test_split_is_stratified_disjoint_seeded_and_hashed():
    config = DatasetConfig(name="mnist-5k", train_size=4000, test_size=1000)
    first = load_split(config, seed=1)
    again = load_split(config, seed=1)
    other = load_split(config, seed=2)
    assert first.sha256 == again.sha256 and first.sha256 != other.sha256
    assert np.bincount(first.y_train).tolist() == [400] * 10
    assert np.bincount(first.y_test).tolist() == [100] * 10
    train_rows = {row.tobytes() for row in first.x_train}
    assert not any(row.tobytes() in train_rows for row in first.x_test)


def test_a_distorted_split_keeps_its_labels_and_no_image_equals_a_shipped_one():
    plain = DatasetConfig(name="mnist-5k", train_size=1000, test_size=500)
    distorted = DatasetConfig(name="mnist-5k", train_size=1000, test_size=500, distort={"alpha": 34, "sigma": 4})
    before, after = load_split(plain, seed=3), load_split(distorted, seed=3)
    assert after.x_train.shape == before.x_train.shape and after.x_train.dtype == np.float32
    assert np.array_equal(after.y_train, before.y_train) and np.array_equal(after.y_test, before.y_test)
    assert after.x_train.min() >= 0.0 and after.x_train.max() <= 1.0
    shipped = {np.rint(row * 255).astype(np.uint8).tobytes() for row in DATASETS["mnist-5k"].load(None).x_train}
    for images in (after.x_train, after.x_test):
        assert not any(np.rint(row * 255).astype(np.uint8).tobytes() in shipped for row in images)
    # Seeded like the split: the same seed, the same images; another seed, others.
    assert load_split(distorted, seed=3).sha256 == after.sha256 != before.sha256
    assert load_split(distorted, seed=4).sha256 != after.sha256
    # The digits stay close to what they were: each moved by a few pixels, not redrawn.
    moved = np.abs(after.x_train - before.x_train).mean(axis=(1, 2, 3))
    assert 0.02 < moved.mean() < 0.2


def test_asking_for_more_samples_than_exist_is_a_clear_error():
    with pytest.raises(DatasetError, match="more samples than the dataset has"):
        stratified_split(np.arange(10) % 2, 8, 8, np.random.default_rng(0))


def test_a_tampered_bundled_file_is_refused(tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / "datasets").mkdir(parents=True)
    shutil.copytree(REPO / "scenarios", home / "scenarios")
    data = dict(np.load(REPO / "datasets/mnist-5k.npz"))
    data["labels"] = data["labels"].copy()
    data["labels"][0] = 9
    np.savez_compressed(home / "datasets/mnist-5k.npz", **data)
    monkeypatch.setenv("SECUREML_HOME", str(home))
    with pytest.raises(DatasetError) as caught:
        DATASETS["mnist-5k"].load(None)
    message = caught.value.message()
    assert "does not match its recorded sha256" in message and "git checkout" in message


def test_a_missing_bundled_file_says_how_to_restore_it(tmp_path, monkeypatch):
    monkeypatch.setenv("SECUREML_HOME", str(tmp_path))
    with pytest.raises(DatasetError, match="missing"):
        DATASETS["mnist-5k"].load(None)


# --------------------------------------------------------------------------- torchvision roots


def _idx_images(path, images: np.ndarray, compress: bool = False) -> None:
    header = struct.pack(">IIII", 0x00000803, len(images), *images.shape[1:])
    blob = header + images.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(blob) if compress else blob)


def _idx_labels(path, labels: np.ndarray) -> None:
    path.write_bytes(struct.pack(">II", 0x00000801, len(labels)) + labels.astype(np.uint8).tobytes())


def _write_mnist_format(root, folder: str, prefix: str = "") -> None:
    """The raw IDX files exactly as torchvision expects them after a download."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, count in (("train", 60), ("t10k", 20)):
        _idx_images(raw / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (count, 28, 28)))
        _idx_labels(raw / f"{split}-labels-idx1-ubyte", np.arange(count) % 10)


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_torchvision_mnist_formats_load_from_a_local_root(tmp_path, name, folder):
    _write_mnist_format(tmp_path, folder)
    split = load_split(DatasetConfig(name=name, train_size=40, test_size=10), seed=0, root=tmp_path)
    assert split.x_train.shape == (40, 1, 28, 28) and split.x_test.shape == (10, 1, 28, 28)
    assert split.x_train.dtype == np.float32 and split.x_train.max() <= 1.0
    assert sorted(np.unique(split.y_train)) == list(range(10))


def test_torchvision_cifar10_loads_from_a_local_root(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        batch = {"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8), "labels": list(np.arange(20) % 10)}
        with open(folder / name, "wb") as handle:
            pickle.dump(batch, handle)  # the official format of CIFAR-10's python version
    split = load_split(DatasetConfig(name="cifar10", train_size=50, test_size=10), seed=0, root=tmp_path)
    assert split.x_train.shape == (50, 3, 32, 32)
    assert split.class_names[0] == "airplane"


def test_torchvision_data_without_a_root_says_how_to_get_it(monkeypatch):
    monkeypatch.delenv("SECUREML_DATA", raising=False)
    with pytest.raises(DatasetError) as caught:
        load_split(DatasetConfig(name="mnist", train_size=10, test_size=10), seed=0)
    message = caught.value.message()
    assert "--data-root" in message and "SECUREML_DATA" in message and "download=True" in message


def test_torchvision_data_missing_under_the_root_names_the_root(tmp_path):
    with pytest.raises(DatasetError) as caught:
        load_split(DatasetConfig(name="fashion-mnist", train_size=10, test_size=10), seed=0, root=tmp_path)
    assert str(tmp_path) in caught.value.message()


def test_data_root_comes_from_the_environment(tmp_path, monkeypatch):
    _write_mnist_format(tmp_path, "MNIST")
    monkeypatch.setenv("SECUREML_DATA", str(tmp_path))
    assert datasets.data_root(None) == tmp_path
