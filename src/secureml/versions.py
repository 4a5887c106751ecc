"""Versions, source hashes and the machine, recorded in every result and cache key, so that
a number can be reproduced and a drift between two machines can be read from two files.

Nothing here imports torch at module level: `cpu()` reads /proc/cpuinfo, and only
`torch_build()` and `thread_count()`, called by a run that has torch loaded anyway, import it.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import os
import platform
from importlib import metadata
from pathlib import Path

_PACKAGES = {
    "secureml": "secureml",
    "torch": "torch",
    "torchvision": "torchvision",
    "art": "adversarial-robustness-toolbox",
    "numpy": "numpy",
    "scikit-learn": "scikit-learn",
}

# The folder of the `secureml` package (src/secureml in a checkout).
PACKAGE_DIR = Path(__file__).resolve().parent


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


def software_key(*modules: str) -> dict[str, str]:
    """A part of every cache key: the installed versions and the hash of the secureml source
    that computes the artefact (`modules` and all they import, see `source_hash`).

    The package version stays at 0.1.0 across code changes, so it alone let a run reuse
    results computed by older code (issue 14). Every package of `versions()` is in, not
    only the ones an artefact obviously needs: ART's defences cluster with scikit-learn,
    and numpy rounds in every attack.

    The torch thread count is NOT in (yet): a victim trained at 1 and at 2 threads differs in
    its last bits, but `grade --jobs N` workers run at their own thread count and would then
    retrain every stage the parent or `verify` cached (tried in stop 18: a 2-job grading test
    timed out). Both ends must agree on a thread count first.
    """
    return {**versions(), "source": source_hash(*modules)}


# --------------------------------------------------------------------------- source hash


@functools.cache
def source_hash(*modules: str) -> str:
    """sha256 of the source files behind `modules`: a package named here counts with all its
    files, and every secureml module any of them imports, at the top or lazily inside a
    function, counts too, with its parent packages' `__init__.py`.

    Imports under `if TYPE_CHECKING:` are left out: they never run. A module loaded only
    by name at run time (the FAMILIES registry) is not followed; name it here instead.
    """
    files = source_files(*modules)
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(PACKAGE_DIR)).encode() + b"\x00")
        digest.update(path.read_bytes() + b"\x00")
    return digest.hexdigest()


def source_files(*modules: str) -> list[Path]:
    """The files `source_hash` reads, sorted."""
    seen: set[Path] = set()
    todo = [(name, True) for name in modules]
    while todo:
        name, whole_package = todo.pop()
        parts = name.split(".")
        # Importing a.b.c runs a/__init__.py and a/b/__init__.py first.
        todo.extend((".".join(parts[:end]), False) for end in range(1, len(parts)))
        for path in _files_of(name, whole_package):
            if path not in seen:
                seen.add(path)
                todo.extend((imported, False) for imported in _secureml_imports(path))
    return sorted(seen)


def _files_of(module: str, whole_package: bool) -> list[Path]:
    if module != "secureml" and not module.startswith("secureml."):
        raise ValueError(f"source_hash covers secureml modules only, got {module!r}")
    location = PACKAGE_DIR.joinpath(*module.split(".")[1:])
    if location.is_dir():
        if whole_package:
            return sorted(location.rglob("*.py"))
        return [location / "__init__.py"] if (location / "__init__.py").is_file() else []
    if location.with_suffix(".py").is_file():
        return [location.with_suffix(".py")]
    return []  # `from secureml.x import name` where name is not a module


@functools.cache
def _secureml_imports(path: Path) -> tuple[str, ...]:
    """Every secureml module `path` imports, wherever the import statement is."""
    found: list[str] = []

    class Imports(ast.NodeVisitor):
        def visit_If(self, node: ast.If) -> None:
            if isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
                for statement in node.orelse:
                    self.visit(statement)
                return
            self.generic_visit(node)

        def visit_Import(self, node: ast.Import) -> None:
            found.extend(alias.name for alias in node.names if _ours(alias.name))

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            module = node.module or ""
            if node.level:  # relative: resolve against this file's package
                package = list(path.relative_to(PACKAGE_DIR).parent.parts)
                package = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                module = ".".join(["secureml", *package, *([module] if module else [])])
            if _ours(module):
                found.append(module)
                # `from secureml.families import base` imports the module base.
                found.extend(f"{module}.{alias.name}" for alias in node.names)

    Imports().visit(ast.parse(path.read_bytes(), filename=str(path)))
    return tuple(found)


def _ours(module: str) -> bool:
    return module == "secureml" or module.startswith("secureml.")


# --------------------------------------------------------------------------- the machine


def thread_count() -> int:
    import torch

    return torch.get_num_threads()


def set_threads(threads: int | None) -> None:
    """torch's CPU threads for what follows (None: leave torch's default)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


@functools.cache
def cpu() -> dict[str, object]:
    """The CPU model and its feature flags (which vector instructions torch may use, and
    so how it rounds). Read from /proc/cpuinfo on Linux; elsewhere what `platform` knows."""
    model, flags = "", ""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model", "cpu model") and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:  # x86 and ARM spellings
            flags = value.strip()
    return {
        "model": model or platform.processor() or "unknown",
        "architecture": platform.machine(),
        "cores": os.cpu_count() or 0,
        "flags": " ".join(sorted(flags.split())),
    }


def torch_build(device: str = "cpu") -> dict[str, object]:
    """How torch was built and set up: CPU-only or CUDA, and whether deterministic
    algorithms were on (`torch.use_deterministic_algorithms`)."""
    import torch

    cuda = torch.version.cuda
    return {
        "version": torch.__version__,
        "build": f"cuda {cuda}" if cuda else "cpu",
        "cuda_available": bool(cuda) and torch.cuda.is_available(),
        "device": device,
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "mkldnn": torch.backends.mkldnn.is_available(),
    }


def environment(device: str = "cpu") -> dict[str, object]:
    """Everything about where a result was computed, beyond the package versions."""
    return {
        "threads": thread_count(),
        "cpu": cpu(),
        "torch": torch_build(device),
        "platform": platform.platform(),
        "source_sha256": source_hash("secureml"),
    }
