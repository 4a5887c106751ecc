"""Shared fixtures: an isolated cache per test session, and ways to call the CLI."""

from __future__ import annotations

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
# of poisoning-01 is a bright checkerboard at row 11, column 5, target 2, on which the
# reference scores 89.7 (measured without the ART baselines).
VARIANT_SEED = 2
# `secureml grade` also grades on an automatic variant by default, drawn from a new random
# seed in every new gradebook: one more stage to build per test. Tests that grade the
# public scenario only run without it; tests of the variant pass --variant-seed.
os.environ.setdefault("SECUREML_GRADE_VARIANT", "none")


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory) -> Path:
    """One cache for the whole session: a victim trained by one test is reused by the next,
    and nothing touches the user's own cache."""
    path = tmp_path_factory.mktemp("secureml-cache")
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
    """The sdist and the wheel built from it, as `python -m build` makes them (once a session).

    Built from a copy: setuptools lays out the sdist's tree and the egg-info inside the
    source folder, which must not touch (or race with) the checkout."""
    source = tmp_path_factory.mktemp("source") / "secureml"
    shutil.copytree(REPO, source, ignore=NOT_SOURCE)
    outdir = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(outdir), str(source)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return {"wheel": next(outdir.glob("*.whl")), "sdist": next(outdir.glob("*.tar.gz"))}
