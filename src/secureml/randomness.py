"""Seeds: every stochastic step derives its own seed from the scenario's.

numpy is imported inside the functions that use it: drawing a variant (secureml.variants)
derives seeds and must stay light.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
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
    """
    import random

    import torch

    saved = random.getstate()
    random.seed(seed)
    try:
        with numpy_global_seed(seed), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    finally:
        random.setstate(saved)
