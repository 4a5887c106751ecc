"""Versions and settings recorded in every result, so a number can be reproduced."""

from __future__ import annotations

import functools
import platform
from importlib import metadata

_PACKAGES = {
    "secureml": "secureml",
    "torch": "torch",
    "torchvision": "torchvision",
    "art": "adversarial-robustness-toolbox",
    "numpy": "numpy",
    "scikit-learn": "scikit-learn",
}


@functools.cache
def versions() -> dict[str, str]:
    """Installed versions, read from package metadata so that no heavy module is imported."""
    found = {"python": platform.python_version()}
    for name, distribution in _PACKAGES.items():
        try:
            found[name] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def versions_of(*names: str) -> dict[str, str]:
    """The versions of `names` (keys of `versions()`), as a part of a cache key: results
    computed by other versions of these packages are never reused."""
    return {name: versions()[name] for name in names}


def thread_count() -> int:
    import torch

    return torch.get_num_threads()
