"""A Gradescope autograder for one scenario, grading with the same code as `secureml grade`.

    build_bundle(scenario, out, wheel=..., hidden=..., settings=...)   `secureml autograder`
    prepare(root)                                                      setup.sh, once per image
    run(root)                                                          run_autograder, per submission

The bundle is a zip that holds at its root what Gradescope's autograder specification asks
for and what grading needs (gradescope-autograders.readthedocs.io, "specs"):

    setup.sh                  run once, as root, when Gradescope builds the image (Ubuntu):
                              Python, bubblewrap, the wheel with the CPU build of torch; then
                              it builds the scenario's victim and attack into the cache
    run_autograder            run per submission, as root, in /autograder: `secureml
                              run-autograder`, and a valid results.json even if that fails
    secureml-*.whl            the package, as `make wheel` builds it
    ID.yaml                   the scenario
    hidden-variant.yaml       the hidden variant's overrides, when one is given
    secureml-autograder.json  the settings: those file names, visibility, limits, and the
                              grader-only seed of the automatic variant, if any

`run` finds the trainee's file in /autograder/submission, grades it by running `secureml
grade` on it (the very command an instructor runs, so whatever `grade` does, the
autograder does), reads the row from that run's gradebook and writes
/autograder/results/results.json from it (`gradebook.gradescope_results`). The trainee's
code runs only in `grade`'s sandbox, which sees its inputs and nothing of /autograder: it
cannot write results.json. When the grader itself fails (no isolation here, a crash), the
results say so and that the submission will be graded again; the cause goes to stdout,
which only instructors see.

Only the standard library is imported at module level.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from secureml import __version__, loader
from secureml.cache import Cache
from secureml.datasets import DATASETS
from secureml.errors import SecuremlError
from secureml.families.base import RunContext
from secureml.files import atomic_path, write_atomically
from secureml.gradebook import (
    GRADESCOPE_VISIBILITIES,
    Gradebook,
    GradebookError,
    gradescope_grader_failure,
    gradescope_results,
)
from secureml.paths import content_root
from secureml.progress import RichProgress
from secureml.runner import prepare_stage
from secureml.variants import first_valid_variant

if TYPE_CHECKING:
    from secureml.scenario import ScenarioBase

__all__ = [
    "GRADESCOPE_ROOT",
    "SETTINGS_NAME",
    "AutograderError",
    "AutograderSettings",
    "Bundle",
    "build_bundle",
    "find_wheel",
    "prepare",
    "run",
]

GRADESCOPE_ROOT = Path("/autograder")
SETTINGS_NAME = "secureml-autograder.json"
HIDDEN_NAME = "hidden-variant.yaml"
# What `grade` calls the one submission it is given: the name only shows in the gradebook
# of this run, which is thrown away.
TRAINEE = "submission"
# Where setup.sh installs secureml and keeps the cache of the scenario's victim and attack.
VENV = "/opt/secureml"
CACHE = "/opt/secureml-cache"

# Entries an upload may hold that are never the trainee's code.
_JUNK_NAMES = {"__MACOSX", "__pycache__"}


class AutograderError(SecuremlError):
    """The bundle cannot be built as asked."""

    exit_code = 2


@dataclass(frozen=True)
class AutograderSettings:
    """How the autograder grades, stored in the bundle.

    visibility: when trainees see their results (Gradescope's visibility values).
    timeout_s, memory_mb: the limits of the trainee's code, as `grade --timeout --memory`.
    variant_seed: the automatic variant's seed, as `grade --variant-seed`; None for none.
        Gradescope stops a whole run at its own timeout (10 minutes unless the assignment
        says otherwise, at most 40): the default leaves room for the evaluation.
    """

    visibility: str = "visible"
    timeout_s: float = 300.0
    memory_mb: int = 4096
    variant_seed: int | None = None  # None: no automatic variant

    def __post_init__(self) -> None:
        if self.visibility not in GRADESCOPE_VISIBILITIES:
            raise AutograderError(f"unknown visibility {self.visibility!r}",
                                  expected=", ".join(GRADESCOPE_VISIBILITIES))


@dataclass(frozen=True)
class Bundle:
    path: Path
    size_bytes: int
    files: list[str]
    wheel: Path


# --------------------------------------------------------------------------- building


def find_wheel(explicit: Path | None) -> Path:
    """The wheel to put in the bundle: `explicit`, else this version's in the checkout's dist/."""
    if explicit is not None:
        wheel = Path(explicit)
    else:
        root = content_root()
        wheel = root.path / "dist" / f"secureml-{__version__}-py3-none-any.whl"
        if not wheel.is_file():
            raise AutograderError(
                f"no wheel of secureml {__version__} to put in the bundle",
                file=str(wheel),
                fix="build it with `make wheel` in the clone, or pass --wheel FILE",
            )
    try:
        with zipfile.ZipFile(wheel) as archive:
            names = set(archive.namelist())
    except (OSError, zipfile.BadZipFile) as error:
        raise AutograderError(f"the wheel cannot be read ({error})", file=str(wheel),
                              fix="build it again with `make wheel`") from error
    if not wheel.name.startswith("secureml-") or "secureml/cli.py" not in names:
        raise AutograderError("this is not a wheel of secureml", file=str(wheel),
                              fix="pass the wheel `make wheel` writes to dist/")
    return wheel


def build_bundle(scenario: ScenarioBase, out: Path, *, wheel: Path, hidden: Path | None = None,
                 settings: AutograderSettings = AutograderSettings()) -> Bundle:
    """Write the Gradescope autograder zip for `scenario` (and its hidden variant) to `out`."""
    if scenario.source is None:
        raise AutograderError("the scenario was not loaded from a file", fix="load it with secureml.loader.load")
    if not DATASETS[scenario.dataset.name].bundled:
        raise AutograderError(
            f"the scenario uses the dataset '{scenario.dataset.name}', which is not bundled with "
            "secureml; Gradescope's machines have no data root to read it from",
            file=str(scenario.source), field="dataset.name",
            fix="grade this scenario with `secureml grade`, or use a bundled dataset (digits, mnist-5k)",
        )
    if hidden is not None:
        loader.apply_overrides(scenario, hidden)  # refuse a bad variant now, not on Gradescope
    scenario_name = f"{scenario.id}.yaml"
    config = {
        "scenario": scenario_name,
        "hidden": HIDDEN_NAME if hidden is not None else None,
        "visibility": settings.visibility,
        "timeout_s": settings.timeout_s,
        "memory_mb": settings.memory_mb,
        # The automatic variant's grader-only seed, if any: fixed in the bundle, so every
        # submission to this assignment meets the same variant.
        "variant_seed": settings.variant_seed,
        "wheel": wheel.name,
        "secureml": __version__,
    }
    entries: list[tuple[str, bytes, int]] = [
        ("setup.sh", setup_script(wheel.name).encode(), 0o755),
        ("run_autograder", run_script().encode(), 0o755),
        (wheel.name, wheel.read_bytes(), 0o644),
        (scenario_name, scenario.source.read_bytes(), 0o644),
        (SETTINGS_NAME, (json.dumps(config, indent=2) + "\n").encode(), 0o644),
    ]
    if hidden is not None:
        entries.append((HIDDEN_NAME, Path(hidden).read_bytes(), 0o644))
    out = Path(out)
    if out.is_dir():
        raise AutograderError("--out is a folder, but the bundle is one zip file", file=str(out),
                              fix="give a file name such as autograder.zip")
    with atomic_path(out) as temporary, zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = (stat.S_IFREG | mode) << 16  # executable scripts
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return Bundle(out, out.stat().st_size, [name for name, _, _ in entries], wheel)


def setup_script(wheel_name: str) -> str:
    """setup.sh: what Gradescope runs once, as root, when it builds the autograder's image."""
    return f"""#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder's image (Ubuntu).
# It installs Python, bubblewrap (each submission runs in its sandbox) and secureml from
# the wheel beside it, with the CPU build of torch, then builds the scenario's victim and
# attack into the cache, so that each submission only runs its own code and the evaluation.
set -euo pipefail
cd "$(dirname "$0")"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends bubblewrap ca-certificates python3 python3-venv util-linux
python3 -m venv {VENV}
{VENV}/bin/python -m pip install --quiet --upgrade pip
# The CPU build of torch first: pip keeps it and skips the CUDA build (a 3 GB download).
{VENV}/bin/python -m pip install --quiet torch torchvision --index-url https://download.pytorch.org/whl/cpu
{VENV}/bin/python -m pip install --quiet {shlex.quote("./" + wheel_name)}
ln -sf {VENV}/bin/secureml /usr/local/bin/secureml
# The sandbox runs each submission as an unused uid: it must read the interpreter and packages.
chmod -R o+rX {VENV}
SECUREML_CACHE={CACHE} secureml run-autograder --prepare {GRADESCOPE_ROOT}
"""


def run_script() -> str:
    """run_autograder: what Gradescope runs for each submission, as root, in /autograder."""
    fallback = json.dumps(gradescope_grader_failure(
        "secureml run-autograder did not write results.json; see this run's stdout"), indent=2)
    results = GRADESCOPE_ROOT / "results" / "results.json"
    return f"""#!/usr/bin/env bash
# Gradescope runs this for every submission, as root, in {GRADESCOPE_ROOT}. secureml (which
# setup.sh installed on PATH) grades the submission in its sandbox and writes
# {results}. If secureml cannot run at all, this script writes results that
# say the grader failed and the submission will be graded again.
set -uo pipefail
export SECUREML_CACHE="${{SECUREML_CACHE:-{CACHE}}}"
results={results}
mkdir -p "$(dirname "$results")"
rm -f "$results"
secureml run-autograder {GRADESCOPE_ROOT}
status=$?
if [ ! -s "$results" ]; then
    echo "run_autograder: secureml exited with status $status and wrote no results.json" >&2
    cat > "$results" <<'JSON'
{fallback}
JSON
fi
exit 0
"""


# --------------------------------------------------------------------------- on Gradescope


@dataclass(frozen=True)
class _Config:
    scenario_file: Path
    hidden_file: Path | None
    settings: AutograderSettings
    variant_seed: int | None


def _read_config(root: Path) -> _Config:
    source = root / "source"
    path = source / SETTINGS_NAME
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        settings = AutograderSettings(visibility=raw["visibility"], timeout_s=float(raw["timeout_s"]),
                                      memory_mb=int(raw["memory_mb"]))
        scenario_file = source / Path(raw["scenario"]).name
        hidden_file = source / Path(raw["hidden"]).name if raw.get("hidden") else None
        variant_seed = None if raw.get("variant_seed") is None else int(raw["variant_seed"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise AutograderError(f"the bundle's settings cannot be read ({type(error).__name__}: {error})",
                              file=str(path), fix="build the bundle again with `secureml autograder`") from error
    return _Config(scenario_file, hidden_file, settings, variant_seed)


def prepare(root: Path = GRADESCOPE_ROOT) -> None:
    """Build the graded scenario's stage and its automatic variant's into the cache (setup.sh, once)."""
    config = _read_config(Path(root))
    loaded = loader.load(config.scenario_file)
    graded = loader.apply_overrides(loaded, config.hidden_file) if config.hidden_file else loaded
    progress = RichProgress()
    ctx = RunContext(cache=Cache(), progress=progress)
    with progress:
        prepare_stage(graded, ctx)
        if config.variant_seed is not None:
            first_valid_variant(graded, config.variant_seed, lambda variant: prepare_stage(variant, ctx))


def run(root: Path = GRADESCOPE_ROOT) -> dict[str, Any]:
    """Grade /autograder/submission and write /autograder/results/results.json; return it.

    Never raises for a failure of the trainee's code or of the grader: either ends in a
    results.json that says what happened. Raises OSError only if results.json cannot be
    written at all.
    """
    root = Path(root)
    started = time.monotonic()
    try:
        results = _grade(root, started)
    except Exception as error:  # a grader failure still gives a valid results.json
        detail = f"{type(error).__name__}: {error}"
        print(f"secureml run-autograder: the grader failed: {detail}")
        results = gradescope_grader_failure(detail, execution_time_s=time.monotonic() - started)
    write_atomically(root / "results" / "results.json",
                     json.dumps(results, allow_nan=False, indent=2, ensure_ascii=False) + "\n")
    return results


def _grade(root: Path, started: float) -> dict[str, Any]:
    config = _read_config(root)
    settings = config.settings
    with tempfile.TemporaryDirectory(prefix="secureml-autograder-") as work_name:
        work = Path(work_name)
        submissions = work / "submissions"
        submissions.mkdir()
        chosen = stage_submission(root / "submission", submissions)
        print(f"secureml run-autograder: grading {chosen!r}")  # repr: trainee names stay inert
        db = work / "gradebook.db"
        command = [sys.executable, "-m", "secureml.cli", "grade", str(config.scenario_file), str(submissions),
                   "--db", str(db), "--json", "--timeout", f"{settings.timeout_s:g}",
                   "--memory", str(settings.memory_mb)]
        variant = ["--variant", "none"] if config.variant_seed is None else ["--variant-seed", str(config.variant_seed)]
        command += variant
        if config.hidden_file is not None:
            command += ["--hidden", str(config.hidden_file)]
        done = subprocess.run(command, cwd=work, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        # For instructors: Gradescope shows stdout to them only (stdout_visibility hidden).
        print(done.stdout, end="")
        print(done.stderr, end="", file=sys.stderr)
        rows = []
        if db.is_file():
            with Gradebook.open(db) as book:
                rows = [row for row in book.rows() if row.trainee == TRAINEE]
        if not rows:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise GradebookError(f"`secureml grade` exited with status {done.returncode} without "
                                 f"grading the submission: {last}")
        return gradescope_results(rows[-1], visibility=settings.visibility,
                                  execution_time_s=time.monotonic() - started)


def stage_submission(submission: Path, submissions: Path) -> str:
    """Lay the trainee's upload out as `grade` reads it, in the folder `submissions`.

    The file is `mitigation.py` (at the top, or the only one in the upload, with the files
    beside it), else the only `.py` file. Anything else is laid out as it is, and `grade`
    records the error with its fix ("holds no mitigation.py (found ...)"). Links are copied
    as links, for `grade` to refuse; hidden entries and archive clutter are left out.
    Returns a description of what was chosen.
    """
    if not submission.is_dir():
        (submissions / TRAINEE).mkdir()  # nothing was handed in: `grade` says what it expects
        return "an empty upload"
    python_files = sorted(path for path in _upload_files(submission) if path.suffix == ".py")
    mitigations = [path for path in python_files if path.name == "mitigation.py"]
    top = submission / "mitigation.py"
    if top in mitigations or len(mitigations) > 1:
        folder = submission
    elif mitigations:
        folder = mitigations[0].parent
    elif len(python_files) == 1:
        shutil.copyfile(python_files[0], submissions / f"{TRAINEE}.py")
        return str(python_files[0].relative_to(submission))
    else:
        folder = submission
    shutil.copytree(folder, submissions / TRAINEE, symlinks=True, ignore=_not_code)
    return f"{folder.relative_to(submission).as_posix()}/" if folder != submission else "the whole upload"


def _upload_files(folder: Path) -> list[Path]:
    """The regular files of an upload, hidden entries and clutter left out, links never followed."""
    found = []
    for directory, subdirs, names in os.walk(folder):  # never follows links
        subdirs[:] = [name for name in subdirs if not _skipped(name)]
        found += [Path(directory, name) for name in names
                  if not _skipped(name) and stat.S_ISREG(os.lstat(os.path.join(directory, name)).st_mode)]
    return found


def _skipped(name: str) -> bool:
    return name.startswith(".") or name in _JUNK_NAMES


def _not_code(directory: str, names: list[str]) -> list[str]:
    """copytree's ignore: hidden entries, clutter, and anything but folders, files and links
    (a named pipe would block the copy)."""
    ignored = []
    for name in names:
        mode = os.lstat(os.path.join(directory, name)).st_mode
        if _skipped(name) or not (stat.S_ISDIR(mode) or stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
            ignored.append(name)
    return ignored
