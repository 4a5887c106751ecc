"""A content-hash cache for trained victims and attack artefacts.

Keys are sha256 hashes of everything that determines the artefact: the config, the data
hash, the seed, the package versions and a hash of the secureml source that computes it
(`secureml.versions.software_key`), so a stale entry can never be returned: a change to
any of them, an edit to the code included, gives a new key. Entries are written
atomically (temp file + rename), so a crash leaves no half-written entry. Arrays are
stored with safetensors or `.npy` and read without pickle.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from secureml.files import write_atomically


def default_cache_dir() -> Path:
    env = os.environ.get("SECUREML_CACHE")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("secureml"))


def content_key(*parts: Any) -> str:
    """sha256 of JSON-serialisable parts; numpy arrays may be passed and are hashed by content."""
    digest = hashlib.sha256()
    for part in parts:
        if hasattr(part, "dtype") and hasattr(part, "shape"):
            digest.update(arrays_sha256(part).encode())
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
        digest.update(b"\x00")
    return digest.hexdigest()


def arrays_sha256(*arrays: Any) -> str:
    """sha256 of numpy arrays' dtypes, shapes and bytes, in order (what a split was drawn as)."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(str(array.dtype).encode() + str(array.shape).encode())
        digest.update(memoryview(array).cast("B") if array.flags.c_contiguous else array.tobytes())
    return digest.hexdigest()


class Cache:
    """Files under `root/<kind>/<key>.<suffix>`; counts hits and misses per kind."""

    def __init__(
        self, root: Path | None = None, *, enabled: bool = True, read_only: bool = False, reuse: bool = True
    ) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self.enabled = enabled
        # Read-only caches serve entries shipped with a mitigation's inputs.
        self.read_only = read_only
        # reuse=False (`--no-cache`) reads nothing and still stores what it computed: the
        # fresh results replace the old ones, as `docker build --no-cache` does.
        self.reuse = reuse
        self.hits: Counter[str] = Counter()
        self.misses: Counter[str] = Counter()

    def path(self, kind: str, key: str, suffix: str) -> Path:
        return self.root / kind / f"{key}.{suffix}"

    # ------------------------------------------------------------------ tensors

    def load_tensors(self, kind: str, key: str) -> dict[str, Any] | None:
        """numpy arrays stored with safetensors, or None on a miss."""
        path = self.path(kind, key, "safetensors")
        if not (self.enabled and self.reuse and path.is_file()):
            self.misses[kind] += 1
            return None
        from safetensors.numpy import load_file

        try:
            arrays = load_file(str(path))
        except Exception:  # a corrupt entry is a miss, and is rebuilt
            self.misses[kind] += 1
            return None
        self.hits[kind] += 1
        return arrays

    def save_tensors(self, kind: str, key: str, arrays: Mapping[str, Any]) -> None:
        if not self.enabled or self.read_only:
            return
        import numpy as np
        from safetensors.numpy import save

        blob = save({name: np.ascontiguousarray(value) for name, value in arrays.items()})
        write_atomically(self.path(kind, key, "safetensors"), blob)

    # ------------------------------------------------------------------ json

    def load_json(self, kind: str, key: str) -> Any | None:
        path = self.path(kind, key, "json")
        if not (self.enabled and self.reuse and path.is_file()):
            self.misses[kind] += 1
            return None
        try:
            value = json.loads(path.read_text())
        except (OSError, ValueError):
            self.misses[kind] += 1
            return None
        self.hits[kind] += 1
        return value

    def save_json(self, kind: str, key: str, value: Any) -> None:
        if self.enabled and not self.read_only:
            write_atomically(self.path(kind, key, "json"), json.dumps(value).encode())

    def summary(self) -> dict[str, dict[str, int]]:
        kinds = sorted(set(self.hits) | set(self.misses))
        return {kind: {"hits": self.hits[kind], "misses": self.misses[kind]} for kind in kinds}
