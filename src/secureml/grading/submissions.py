"""Finding trainees' submissions: a folder of `NAME.py` files or `NAME/` folders, or a zip
of one unpacked safely; and copying a submission into a sandbox's folder.

    discover_submissions(SUBMISSIONS, unpack_dir) -> Discovery   (Submission per trainee)
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from secureml.errors import SecuremlError

# The sandbox starts each submission's file as MITIGATION_NAME inside its own folder.
MITIGATION_NAME = "mitigation.py"

# Bounds on what a submission may hold. A mitigation is a Python file or a small folder;
# these are two orders of magnitude above a real one and keep copies into every sandbox
# cheap.
MAX_SUBMISSION_FILES = 200
MAX_SUBMISSION_BYTES = 50 * 1024 * 1024
# Bounds on a zip of submissions, checked on the bytes actually extracted (the sizes in
# a zip's directory can lie): room for several hundred trainees, not for a zip bomb.
MAX_ZIP_FILES = 10_000
MAX_ZIP_BYTES = 512 * 1024 * 1024
MAX_TRAINEE_NAME_CHARS = 128
# Folder entries that archivers and Python leave behind; never a trainee.
_IGNORED_NAMES = {"__MACOSX", "__pycache__"}


class SubmissionsError(SecuremlError):
    """The submissions folder or zip cannot be used as it is."""

    exit_code = 2


@dataclass(frozen=True)
class Submission:
    """One trainee's submission: the files to copy into the sandbox and their hash.

    files: (path inside the sandbox folder, source path) pairs; the entry point is always
        MITIGATION_NAME. `ALICE.py` becomes `mitigation.py`, so that two trainees who hand
        in the same file have the same sha256.
    problem: why it cannot run at all (e.g. a folder without mitigation.py). Such a
        submission is recorded as "error" without starting a sandbox.
    """

    trainee: str
    source: Path
    files: tuple[tuple[str, Path], ...]
    sha256: str
    problem: str = ""


@dataclass(frozen=True)
class Discovery:
    submissions: list[Submission]
    notes: list[str]  # entries that were skipped, and why


def discover_submissions(path: Path, unpack_dir: Path) -> Discovery:
    """The submissions in a folder (one `NAME.py` or `NAME/mitigation.py` per trainee) or a zip of one.

    unpack_dir: an empty folder a zip is extracted into; it must outlive the grading.
    Raises SubmissionsError for a path that is neither, or an unsafe zip.
    """
    path = Path(path)
    if path.is_file() and zipfile.is_zipfile(path):
        root = _unpack_zip(path, Path(unpack_dir))
        # A zip made by zipping the folder itself holds that one folder.
        entries = [entry for entry in root.iterdir() if entry.name not in _IGNORED_NAMES]
        if len(entries) == 1 and entries[0].is_dir() and not (entries[0] / MITIGATION_NAME).exists():
            root = entries[0]
    elif path.is_dir():
        root = path
    elif path.exists():
        raise SubmissionsError(
            "the submissions path is neither a folder nor a zip file",
            file=str(path),
            fix="give a folder holding NAME.py files or NAME/mitigation.py folders, or a zip of one",
        )
    else:
        raise SubmissionsError("the submissions folder does not exist", file=str(path),
                               fix="check the path")

    submissions: list[Submission] = []
    notes: list[str] = []
    seen: dict[str, str] = {}
    for entry in sorted(root.iterdir(), key=lambda item: item.name):
        name = entry.name
        if name.startswith(".") or name in _IGNORED_NAMES:
            continue
        mode = entry.lstat().st_mode
        if stat.S_ISLNK(mode):
            notes.append(f"skipped {name}: a symbolic link (submissions must be real files)")
            continue
        if stat.S_ISDIR(mode):
            trainee = name
        elif stat.S_ISREG(mode) and name.endswith(".py"):
            trainee = name[: -len(".py")]
        else:
            notes.append(f"skipped {name}: not a NAME.py file or a NAME/ folder")
            continue
        bad_name = _trainee_name_problem(trainee)
        if bad_name:
            notes.append(f"skipped {name}: {bad_name}")
            continue
        if trainee in seen:
            raise SubmissionsError(
                f"trainee '{trainee}' has two submissions: {seen[trainee]} and {name}",
                file=str(path),
                fix="keep one of them",
            )
        seen[trainee] = name
        submissions.append(_folder_submission(trainee, entry) if stat.S_ISDIR(mode)
                           else _file_submission(trainee, entry))
    if not submissions:
        raise SubmissionsError(
            "no submissions found",
            file=str(path),
            expected="NAME.py files or NAME/ folders holding mitigation.py",
            found=", ".join(sorted(entry.name for entry in root.iterdir())[:10]) or "an empty folder",
        )
    return Discovery(submissions, notes)


def _trainee_name_problem(name: str) -> str:
    if not name or not name.strip():
        return "an empty trainee name"
    if len(name) > MAX_TRAINEE_NAME_CHARS:
        return f"a trainee name longer than {MAX_TRAINEE_NAME_CHARS} characters"
    if not name.isprintable():
        return "the trainee name holds control characters"
    return ""


def _file_submission(trainee: str, file: Path) -> Submission:
    size = file.stat().st_size
    problem = ""
    if size > MAX_SUBMISSION_BYTES:
        problem = f"{file.name} is {size} bytes, more than the {MAX_SUBMISSION_BYTES} allowed"
    files = ((MITIGATION_NAME, file),)
    return Submission(trainee, file, files, _files_sha256(files), problem)


def _folder_submission(trainee: str, folder: Path) -> Submission:
    files: list[tuple[str, Path]] = []
    problems: list[str] = []
    total = 0
    for directory, subdirs, names in os.walk(folder):  # never follows links
        linked = sorted(d for d in subdirs if os.path.islink(os.path.join(directory, d)))
        subdirs[:] = sorted(d for d in subdirs if d not in _IGNORED_NAMES and d not in linked)
        for name in sorted(names) + linked:
            full = Path(directory, name)
            relative = full.relative_to(folder).as_posix()
            mode = full.lstat().st_mode
            if stat.S_ISLNK(mode):
                problems.append(f"{trainee}/{relative} is a symbolic link; submissions may hold only files")
                continue
            if not stat.S_ISREG(mode):
                problems.append(f"{trainee}/{relative} is not a regular file")
                continue
            if name.endswith(".pyc"):
                continue
            total += full.stat().st_size
            files.append((relative, full))
    if len(files) > MAX_SUBMISSION_FILES:
        problems.append(f"{trainee}/ holds {len(files)} files, more than the {MAX_SUBMISSION_FILES} allowed")
    if total > MAX_SUBMISSION_BYTES:
        problems.append(f"{trainee}/ holds {total} bytes, more than the {MAX_SUBMISSION_BYTES} allowed")
    if not (folder / MITIGATION_NAME).is_file() and not problems:
        python_files = [relative for relative, _ in files if relative.endswith(".py")]
        problems.append(
            f"{trainee}/ holds no {MITIGATION_NAME}"
            + (f" (found {', '.join(python_files[:5])})" if python_files else "")
            + f"; name your main file {MITIGATION_NAME}"
        )
    ordered = tuple(sorted(files))
    return Submission(trainee, folder, ordered, _files_sha256(ordered), "; ".join(problems))


def _files_sha256(files: Sequence[tuple[str, Path]]) -> str:
    """sha256 over (relative path, content sha256) pairs: the same files give the same hash."""
    digest = hashlib.sha256()
    for relative, source in sorted(files):
        content = hashlib.sha256()
        with open(source, "rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                content.update(chunk)
        digest.update(relative.encode() + b"\0" + content.hexdigest().encode() + b"\n")
    return digest.hexdigest()


def _unpack_zip(archive: Path, destination: Path, *, max_files: int = MAX_ZIP_FILES,
                max_bytes: int = MAX_ZIP_BYTES) -> Path:
    """Extract `archive` into `destination`, refusing anything that could escape or flood it.

    Every entry is checked before anything is written: no absolute paths, no `..`, no
    drive letters or backslashes, no symbolic links or other special files. Sizes are
    counted on the bytes actually decompressed, not on what the zip's directory claims.
    """
    destination.mkdir(parents=True, exist_ok=True)

    def refuse(entry: str, why: str) -> SubmissionsError:
        return SubmissionsError(
            f"the zip entry '{entry}' {why}; the zip was not extracted",
            file=str(archive),
            fix="zip the submissions folder itself, with plain files and folders only",
        )

    try:
        with zipfile.ZipFile(archive) as bundle:
            members = bundle.infolist()
            if len(members) > max_files:
                raise SubmissionsError(
                    f"the zip holds {len(members)} entries, more than the {max_files} allowed",
                    file=str(archive),
                    fix="remove data files from the submissions; only the mitigation code is needed",
                )
            plan: list[tuple[zipfile.ZipInfo, PurePosixPath]] = []
            seen: set[str] = set()
            for member in members:
                name = member.filename
                if "\\" in name or "\0" in name:
                    raise refuse(name, "holds a backslash or NUL in its path")
                relative = PurePosixPath(name)
                if relative.is_absolute() or name.startswith("/"):
                    raise refuse(name, "has an absolute path")
                if ".." in relative.parts:
                    raise refuse(name, "climbs out of the folder with '..'")
                if relative.parts and ":" in relative.parts[0]:
                    raise refuse(name, "starts with a drive letter")
                kind = stat.S_IFMT(member.external_attr >> 16)
                if kind == stat.S_IFLNK:
                    raise refuse(name, "is a symbolic link")
                if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                    raise refuse(name, "is a special file (device, pipe or socket)")
                if member.flag_bits & 0x1:
                    raise refuse(name, "is encrypted")
                key = relative.as_posix()
                if key in seen:
                    raise refuse(name, "appears twice")
                seen.add(key)
                plan.append((member, relative))
            written = 0
            for member, relative in plan:
                target = destination.joinpath(*relative.parts)
                if member.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with bundle.open(member) as source, open(target, "xb") as sink:
                    for chunk in iter(lambda: source.read(1 << 20), b""):
                        written += len(chunk)
                        if written > max_bytes:
                            raise SubmissionsError(
                                f"the zip unpacks to more than {max_bytes} bytes "
                                f"(at entry '{member.filename}')",
                                file=str(archive),
                                fix="remove data files from the submissions; only the mitigation code is needed",
                            )
                        sink.write(chunk)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError, OSError) as error:
        raise SubmissionsError(f"the zip cannot be read ({error})", file=str(archive),
                               fix="re-create it with `zip -r submissions.zip submissions/`") from error
    return destination


def copy_submission(submission: Submission, folder: Path) -> None:
    """Copy the trainee's files, never following a link (the folder may change under us)."""
    folder.mkdir(parents=True)
    for relative, source in submission.files:
        target = folder.joinpath(*PurePosixPath(relative).parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(source, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(descriptor, "rb") as reader, open(target, "xb") as writer:
            if not stat.S_ISREG(os.fstat(reader.fileno()).st_mode):
                raise SubmissionsError(f"{source} is no longer a regular file")
            shutil.copyfileobj(reader, writer)


def make_world_readable(folder: Path) -> None:
    """The sandbox runs as an unused uid: it needs o+rX on everything it is given."""
    for directory, _subdirs, names in os.walk(folder):
        os.chmod(directory, 0o755)
        for name in names:
            path = os.path.join(directory, name)
            if not os.path.islink(path):
                os.chmod(path, 0o644)
