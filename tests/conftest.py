"""Shared fixtures: an isolated cache per test session, and ways to call the CLI.

`make test` runs the suite in two parts (Makefile): most files spread over the cores
with pytest-xdist (TEST_WORKERS=N sets how many workers, 0 none), then the tests marked
`serial` alone (see `pytest_collection_modifyitems`). Workers share one cache and one
built wheel, so what one of them trains or builds the others reuse."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The automatic variant's seed in tests that grade with it: one fixed seed, so the session
# builds each variant's stage once (a gradebook would draw a new one at random). Variant 2
# of poisoning-01 is a bright checkerboard at row 11, column 5, target 2, its images
# distorted (alpha 8), on which the reference scores 90.1.
VARIANT_SEED = 2
# `secureml grade` also grades on an automatic variant by default, drawn from a new random
# seed in every new gradebook: one more stage to build per test. Tests that grade the
# public scenario only run without it; tests of the variant pass --variant-seed.
os.environ.setdefault("SECUREML_GRADE_VARIANT", "none")
# Under pytest-xdist two workers (and the runs they start) share the cores: idle OpenMP
# threads sleep instead of spinning at barriers. Numerically the same (test_ci_verify.py).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# Tests that time what they run, or grade under tight limits, would read another worker's
# load as their own: they carry the `serial` marker, and `make test` runs them after the
# first part, alone. The slow end-to-end grading tests in these files allow minutes and
# stay parallel; the `isolation` tests (timeouts, CPU shares, hogs) are always serial.
SERIAL_FILES = {"test_grade.py", "test_gradebook.py", "test_sandbox.py", "test_terminal_safety.py"}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    """Mark the serial tests before `-m` selects by marker."""
    for item in items:
        if item.get_closest_marker("isolation") or (
                item.path.name in SERIAL_FILES and not item.get_closest_marker("slow")):
            item.add_marker(pytest.mark.serial)


def _shared_dir(tmp_path_factory, name: str) -> Path:
    """A folder for the whole session: one per run, shared by its xdist workers."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # each worker's base is a child of the run's
    path = base / name
    path.mkdir(exist_ok=True)
    return path


@contextlib.contextmanager
def _locked(folder: Path):
    """Hold an exclusive lock on FOLDER's lock file: one worker builds, the others wait."""
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory) -> Path:
    """One cache for the whole session: a victim trained by one test is reused by the next,
    and nothing touches the user's own cache. Entries are written atomically, so parallel
    workers may share it. `make test` passes one folder in SECUREML_TEST_CACHE to both of
    its parts."""
    shared = os.environ.get("SECUREML_TEST_CACHE")
    path = Path(shared) if shared else _shared_dir(tmp_path_factory, "secureml-cache")
    path.mkdir(parents=True, exist_ok=True)
    os.environ["SECUREML_CACHE"] = str(path)
    return path


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch) -> Path:
    """An empty cache for tests that must see training happen."""
    path = tmp_path / "cache"
    monkeypatch.setenv("SECUREML_CACHE", str(path))
    return path


def secureml(*args: str, timeout_s: float = 900, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real `secureml` command in a subprocess, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "secureml.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )


def run_json(*args: str, out: Path) -> dict:
    """`secureml run ARGS --json --out OUT`: it must succeed, and print what it wrote."""
    result = secureml("run", *args, "--json", "--out", str(out))
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert json.loads((out / "results.json").read_text()) == payload
    return payload


def pytest_unconfigure(config):
    """The run's last line, when sandbox tests were skipped because bubblewrap is unavailable."""
    terminalreporter = config.pluginmanager.getplugin("terminalreporter")
    if terminalreporter is None:
        return
    skipped = [report for report in terminalreporter.stats.get("skipped", [])
               if "bubblewrap isolation unavailable" in str(report.longrepr)]
    if skipped:
        from secureml import isolation

        terminalreporter.write_line(
            f"{len(skipped)} sandbox tests were skipped: {isolation.capabilities().problem}. "
            f"Fix: {isolation.INSTALL_BUBBLEWRAP}, then run `make test` again "
            "(`secureml doctor` checks the rest).",
            yellow=True, bold=True,
        )


# What a clone holds besides the project's files (.gitignore); left out of the copy we build from.
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.egg-info", "build", "dist",
                                    ".pytest_cache", "out", "results", "*.db", "*.db-*")


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> dict[str, Path]:
    """The sdist and the wheel built from it, as `python -m build` makes them (once a run,
    shared by the parallel workers).

    Built from a copy: setuptools lays out the sdist's tree and the egg-info inside the
    source folder, which must not touch (or race with) the checkout."""
    folder = _shared_dir(tmp_path_factory, "built")
    outdir = folder / "dist"
    with _locked(folder):
        if not any(outdir.glob("*.whl")):
            source = folder / "source" / "secureml"
            shutil.rmtree(folder / "source", ignore_errors=True)
            shutil.copytree(REPO, source, ignore=NOT_SOURCE)
            result = subprocess.run(
                [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(outdir), str(source)],
                capture_output=True, text=True, timeout=600,
            )
            assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return {"wheel": next(outdir.glob("*.whl")), "sdist": next(outdir.glob("*.tar.gz"))}
