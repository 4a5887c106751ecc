"""Where secureml finds its content: scenarios, lab handouts and starters, bundled data.

Three places, the first that applies wins:

1. `SECUREML_HOME` (`--instructor DIR` sets it for one command): a folder laid out like
   the repository (`scenarios/`, `labs/`, `datasets/`);
2. a checkout: the source tree this package runs from (a clone with an editable
   install), or else the working directory when it is a clone of secureml;
3. the content inside the installed package (`secureml/_content`, copied there when the
   wheel is built; see setup.py). It holds what a trainee needs and no instructor
   material: no `solution.py`, no hidden variant.

Scenario files point at their lab files relative to themselves (`../labs/ID/...`), so the
three layouts resolve the same way. Nothing here imports more than the standard library.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path

from secureml.errors import ConfigError, SecuremlError

HOME_VARIABLE = "SECUREML_HOME"
# The folder inside the installed package that holds the copied content.
PACKAGED_CONTENT = "_content"

# What of a lab folder a trainee receives (the wheel, the sdist and `secureml lab`): an
# allow-list, so that a new instructor file is kept out until someone decides otherwise.
TRAINEE_LAB_FILES = ("README.md", "mitigation.py", "*.png", "*.jpg", "*.jpeg", "*.gif", "*.svg", "*.ipynb")
# Never handed out, whatever the allow-list says: reference solutions (solution.py, and a
# notebook that shows one must be named solution*.ipynb).
INSTRUCTOR_LAB_FILES = ("solution*",)
# Hidden variants (overrides for `grade --hidden`) live in scenarios/hidden/: only the
# top level of scenarios/ is content (`scenario_files`, `trainee_content` glob it alone),
# so they are never listed, packaged or handed out.


class ContentNotFound(ConfigError):
    """No scenario anywhere secureml looks."""


class InstructorMaterialMissing(SecuremlError):
    """A command needs a reference solution, and the content in use holds none."""

    exit_code = 9


@dataclass(frozen=True)
class ContentRoot:
    path: Path
    # "SECUREML_HOME", "checkout" or "package"
    origin: str

    def describe(self) -> str:
        return {
            "SECUREML_HOME": f"{self.path} (from {HOME_VARIABLE})",
            "checkout": f"the checkout {self.path}",
            "package": f"the installed package's content {self.path}",
        }[self.origin]


def content_root() -> ContentRoot:
    """The folder holding `scenarios/`, `labs/` and `datasets/` (see the module docstring)."""
    home = os.environ.get(HOME_VARIABLE)
    if home:
        return ContentRoot(Path(home).expanduser().resolve(), "SECUREML_HOME")
    for candidate in (_source_tree(), Path.cwd()):
        if is_checkout(candidate):
            return ContentRoot(candidate.resolve(), "checkout")
    return ContentRoot(packaged_content(), "package")


def _source_tree() -> Path:
    # src/secureml/paths.py -> the repository; in an installed wheel, lib/pythonX.Y.
    return Path(__file__).resolve().parents[2]


def is_checkout(folder: Path) -> bool:
    """A clone of secureml: scenarios/ beside a pyproject.toml that names the project."""
    pyproject = folder / "pyproject.toml"
    if not (folder / "scenarios").is_dir() or not pyproject.is_file():
        return False
    try:
        return 'name = "secureml"' in pyproject.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False


def packaged_content() -> Path:
    """`secureml/_content` of the installed package (it may not exist in a checkout)."""
    from importlib.resources import files

    return Path(str(files("secureml").joinpath(PACKAGED_CONTENT)))


def scenarios_dir() -> Path:
    return content_root().path / "scenarios"


def bundled_dir() -> Path:
    """Where bundled datasets (mnist-5k) live."""
    return content_root().path / "datasets"


def scenario_files() -> list[Path]:
    """Every scenario file; never silently none: says where it looked and how to fix it."""
    root = content_root()
    files = sorted((root.path / "scenarios").glob("*.yaml"))
    if files:
        return files
    looked = [f"{root.path / 'scenarios'} ({root.origin})"]
    if root.origin != "SECUREML_HOME":
        looked.insert(0, f"{HOME_VARIABLE} (not set)")
        looked.insert(1, f"a checkout at {_source_tree()} or {Path.cwd()} (neither is a clone of secureml)")
    raise ContentNotFound(
        "no scenario files found",
        expected="scenarios/*.yaml in one of: " + "; ".join(looked),
        found="none",
        fix=f"point {HOME_VARIABLE} at a folder holding scenarios/ and labs/ (e.g. a clone of "
        "secureml), run inside such a clone, or reinstall secureml from its wheel "
        "(`pip install --force-reinstall secureml`)",
    )


def resolve(id_or_path: str) -> Path:
    """Turn `poisoning-01` or `path/to/file.yaml` into a scenario file path.

    A folder named like an id (the one `secureml lab ID` writes) is not a scenario file:
    the id wins.
    """
    candidate = Path(id_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.is_file():
        if not candidate.is_file():
            raise ConfigError(
                "scenario file not found",
                file=str(candidate),
                fix="check the path, or give a scenario id from `secureml list`",
            )
        return candidate
    path = scenarios_dir() / f"{id_or_path}.yaml"
    if path.is_file():
        return path
    known = [p.stem for p in scenario_files()]
    close = difflib.get_close_matches(id_or_path, known, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise ConfigError(
        f"no scenario with id '{id_or_path}'",
        expected="one of: " + ", ".join(known),
        found=id_or_path,
        fix=hint + "run `secureml list` to see every scenario",
    )


# --------------------------------------------------------------------------- lab files


def is_trainee_lab_file(name: str) -> bool:
    """Whether a file of a lab folder may be handed to trainees (wheel, sdist, `secureml lab`)."""
    if any(fnmatch.fnmatch(name, pattern) for pattern in INSTRUCTOR_LAB_FILES):
        return False
    return any(fnmatch.fnmatch(name, pattern) for pattern in TRAINEE_LAB_FILES)


def trainee_content(root: Path) -> list[Path]:
    """What the wheel carries, relative to a checkout: every scenario file, each lab's
    trainee files and the bundled datasets with their datasheets."""
    selected = list((root / "scenarios").glob("*.yaml"))
    selected += [
        path
        for lab in (root / "labs").iterdir()
        if lab.is_dir()
        for path in lab.iterdir()
        if path.is_file() and is_trainee_lab_file(path.name)
    ]
    selected += [*(root / "datasets").glob("*.npz"), *(root / "datasets").glob("*.md")]
    if not any(path.suffix == ".yaml" for path in selected):
        raise ContentNotFound("no scenario files to package", file=str(root / "scenarios"),
                              fix="build from a clone of secureml or from its sdist")
    return sorted(path.relative_to(root) for path in selected)


def use_instructor_dir(folder: Path | None) -> None:
    """`--instructor DIR`: read content, solutions included, from DIR for this process
    (and the processes it starts) by setting SECUREML_HOME."""
    if folder is None:
        return
    folder = Path(folder).expanduser().resolve()
    if not (folder / "scenarios").is_dir():
        raise InstructorMaterialMissing(
            "the instructor folder has no scenarios/",
            file=str(folder),
            expected="a clone of the secureml repository (scenarios/, labs/ with solution.py files)",
            fix="pass the folder of your clone: --instructor path/to/secureml",
        )
    os.environ[HOME_VARIABLE] = str(folder)


def require_solution(scenario) -> Path:
    """The scenario's reference solution, or one message naming what is missing and where to get it."""
    path = scenario.solution_path
    if path.is_file():
        return path
    root = content_root()
    where = (
        "the installed package holds no reference solutions (they are kept out of the wheel)"
        if root.origin == "package"
        else f"it is not in {root.describe()}"
    )
    raise InstructorMaterialMissing(
        f"scenario '{scenario.id}' needs the instructor material: its reference solution "
        f"{path.name} is missing ({where})",
        file=str(path),
        fix="run from a clone of the secureml repository, or pass --instructor DIR "
        f"(or set {HOME_VARIABLE}=DIR) where DIR is such a clone",
    )
