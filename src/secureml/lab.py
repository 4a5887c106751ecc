"""`secureml lab ID [DIR]`: put a lab where a trainee works on it.

Writes the handout (README.md), the starter as `mitigation.py`, and the lab's pictures and
notebooks into DIR, from whichever content is in use (see `secureml.paths`). Instructor
files never leave: the same allow-list as the wheel's. Only the standard library: this runs
on the CLI's fast path.
"""

from __future__ import annotations

import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

from secureml.errors import SecuremlError
from secureml.paths import is_trainee_lab_file


class LabFolderError(SecuremlError):
    """The lab cannot be written where it was asked to go."""


@dataclass(frozen=True)
class LabFolder:
    scenario_id: str
    folder: Path
    files: list[Path]

    @property
    def mitigation(self) -> Path:
        return self.folder / "mitigation.py"

    @property
    def next_command(self) -> str:
        return f"secureml run {self.scenario_id} --mitigation {shlex.quote(str(self.mitigation))}"

    @property
    def notebooks(self) -> list[Path]:
        return [path for path in self.files if path.suffix == ".ipynb"]

    def to_json(self) -> dict:
        return {
            "scenario": self.scenario_id,
            "folder": str(self.folder),
            "files": [str(path) for path in self.files],
            "next": self.next_command,
        }


def lab_sources(scenario) -> dict[str, Path]:
    """File name in the lab folder -> where it comes from: the starter as mitigation.py,
    then the handout, pictures and notebooks beside it."""
    starter = scenario.starter_path
    if not starter.is_file():
        raise LabFolderError(
            f"the starter of scenario '{scenario.id}' is missing",
            file=str(starter),
            fix="reinstall secureml, or restore the lab folder in your clone",
        )
    sources = {"mitigation.py": starter}
    for path in sorted(starter.parent.iterdir()):
        if path.is_file() and is_trainee_lab_file(path.name) and path.name not in sources:
            sources[path.name] = path
    return sources


def write_lab(scenario, folder: Path, *, force: bool = False) -> LabFolder:
    """Copy the lab into `folder`; refuses to overwrite an existing file unless `force`."""
    if folder.exists() and not folder.is_dir():
        raise LabFolderError(
            "the lab folder is a file",
            file=str(folder),
            expected="a folder that does not exist yet, or an existing folder",
            found="a file",
            fix=f"pick another folder: secureml lab {scenario.id} {scenario.id}-lab",
        )
    sources = lab_sources(scenario)
    targets = {name: folder / name for name in sources}
    existing = [str(path) for path in targets.values() if path.exists()]
    if existing and not force:
        raise LabFolderError(
            f"the lab folder already holds {len(existing)} of the lab's files",
            file=str(folder),
            found=", ".join(existing),
            fix="keep your work and pick another folder, or add --force to overwrite them",
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name, source in sources.items():
            shutil.copyfile(source, targets[name])
    except OSError as error:
        raise LabFolderError(
            f"cannot write the lab ({error.strerror})",
            file=str(error.filename or folder),
            fix="pick a folder you can write to",
        ) from error
    return LabFolder(scenario.id, folder, list(targets.values()))
