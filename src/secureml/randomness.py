"""Seeds: every stochastic step derives its own seed from the scenario's.

numpy is imported inside the functions that use it: drawing a variant (secureml.variants)
derives seeds and must stay light.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import sys
import types
from collections.abc import Iterator, Sequence
from contextlib import contextmanager


def derive_seed(seed: int, *labels: object) -> int:
    """A stable 31-bit seed for one named step, so steps never share a random stream."""
    text = ":".join([str(seed), *map(str, labels)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little") & 0x7FFFFFFF


def generator(seed: int, *labels: object):
    import numpy as np

    return np.random.default_rng(derive_seed(seed, *labels))


@contextmanager
def numpy_global_seed(seed: int) -> Iterator[None]:
    """Seed numpy's global generator for a call into code that only uses it, then restore it.

    ART's clean-label attack draws with `np.random.choice`, and the scikit-learn clusterers
    inside ART's detectors are built with `random_state=None`, which means numpy's global
    state. This is the one place we touch that state, and we put it back afterwards.
    """
    import numpy as np

    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(saved)


@contextmanager
def global_seeds(seed: int) -> Iterator[None]:
    """Seed Python's, numpy's and torch's global generators for one call, then restore them.

    For code we do not own that may draw from them (a trainee's mitigation), so that what it
    draws depends on the scenario's seed alone, not on what ran earlier in the process.

    torch is not imported for it: a sandboxed poisoning filter that never uses torch would
    carry torch's memory into every process it forks (measured: 32 forks held 2.8 GB against
    a 2 GB limit). If torch is not loaded yet, it is seeded the moment the call imports it;
    a fresh torch starts from an OS-drawn seed otherwise.
    """
    import random

    saved = random.getstate()
    random.seed(seed)
    try:
        with numpy_global_seed(seed), _torch_global_seed(seed):
            yield
    finally:
        random.setstate(saved)


@contextmanager
def _torch_global_seed(seed: int) -> Iterator[None]:
    torch = sys.modules.get("torch")
    if torch is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
        return
    hook = _SeedTorchOnImport(seed)
    sys.meta_path.insert(0, hook)
    try:
        yield
    finally:
        if hook in sys.meta_path:
            sys.meta_path.remove(hook)


class _SeedTorchOnImport(importlib.abc.MetaPathFinder):
    """Seeds torch's global generator as soon as `import torch` has run, once."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def find_spec(self, name: str, path: Sequence[str] | None,
                  target: types.ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if name != "torch":
            return None
        sys.meta_path.remove(self)  # once: the real finders locate torch
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module
        seed = self.seed

        def exec_and_seed(module: types.ModuleType) -> None:
            exec_module(module)
            module.manual_seed(seed)

        spec.loader.exec_module = exec_and_seed  # type: ignore[method-assign]  # this import's loader only
        return spec
