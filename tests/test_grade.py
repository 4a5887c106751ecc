"""`secureml grade`, attacked for real: hostile submissions against poisoning-01.

Every test grades real submissions (tests/grade_payloads/) through the grader, in the real
sandbox, on the real stage (mnist-5k, the cached victim). Most go through the Python API
(`grade_submission`, `grade_workshop`) for speed; the kill -9, Ctrl-C, --jobs 2 and zip
tests go through the real command line. Hostile payloads do their attack and then return every index, which
costs the grader no retraining and scores 0, so anything else is the attack getting
through. Timeouts are a few seconds where a timeout is the point. The fork bomb runs only
after the bounded process-limit test in this file has passed, and the CPU hog only after the
bounded CPU-share test. Tests marked `isolation` run again in CI as an unprivileged user.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import REPO, VARIANT_SEED, secureml
from secureml import isolation, sandbox, scenario
from secureml.cli import GRADE_EXPORT_FORMATS, cli
from secureml.errors import ConfigError
from secureml.gradebook import EXPORT_FORMATS, ExportOptions, Gradebook, GradeRow, export, gradescope_results
from secureml.grading import (
    HIDDEN_VARIANT_FEEDBACK,
    GradeJob,
    GradeSettings,
    IsolationUnavailable,
    SubmissionsError,
    automatic_variant,
    discover_submissions,
    grade_submission,
    grade_workshop,
)
from secureml.grading import job as grading_job
from secureml.grading import submissions as grading_submissions
from secureml.grading import workshop as grading_workshop
from secureml.roster import load_roster
from secureml.sandbox import Limits, isolation_mode

PAYLOADS = Path(__file__).resolve().parent / "grade_payloads"
MODE = isolation_mode()
needs_bwrap = pytest.mark.skipif(
    MODE is None, reason=f"bubblewrap isolation unavailable here ({sandbox.isolation_problem()})"
)
# What poisoning's write_inputs gives a mitigation; anything else in its folder is a leak.
POISONING_INPUTS = ["task.json", "train.safetensors", "victim.safetensors"]

# Set by the bounded tests; the fork bomb and the CPU hog refuse to run without them.
_process_limit_proven = False
_cpu_share_proven = False


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def poisoning(session_cache, tmp_path_factory) -> scenario.ScenarioBase:
    """poisoning-01, with its stage built once for the whole file (about 30 s cold)."""
    loaded = scenario.load("poisoning-01")
    folder = tmp_path_factory.mktemp("warmup")
    found = discover_submissions(_submissions(folder / "submissions", {"warmup": "all_indices"}),
                                 folder / "unpacked")
    row = grade_submission(_job(loaded, session_cache, found.submissions[0]))
    assert row.status == "ok", row.error
    return loaded


@pytest.fixture(scope="module")
def honest(poisoning, session_cache, tmp_path_factory) -> GradeRow:
    """What keeping every index (no mitigation) honestly scores: the bar attacks must not beat."""
    return _grade_one(poisoning, session_cache, tmp_path_factory.mktemp("honest"), "all_indices")


def _payload(name: str, **params) -> str:
    text = (PAYLOADS / f"{name}.py").read_text()
    if params:
        assert "PARAMS = {}" in text, f"{name}.py takes no PARAMS"
        text = text.replace("PARAMS = {}", f"PARAMS = {json.dumps(params)}", 1)
    return text


def _submissions(folder: Path, entries: dict[str, str | tuple[str, dict]]) -> Path:
    """A submissions folder: trainee -> payload name, or (payload name, params)."""
    folder.mkdir(parents=True, exist_ok=True)
    for trainee, spec in entries.items():
        name, params = (spec, {}) if isinstance(spec, str) else spec
        (folder / f"{trainee}.py").write_text(_payload(name, **params))
    return folder


def _job(loaded, cache_dir: Path, submission, *, timeout_s: float = 30, memory_mb: int = 2048,
         **limit_overrides) -> GradeJob:
    limits = Limits(timeout_s=timeout_s, memory_mb=memory_mb, **limit_overrides)
    return GradeJob(scenario=loaded, submission=submission, limits=limits, cache_dir=cache_dir,
                    pictures=False)


def _grade_one(loaded, cache_dir: Path, tmp_path: Path, payload: str, *, params: dict | None = None,
               **limits) -> GradeRow:
    folder = _submissions(tmp_path / "submissions", {"trainee": (payload, params or {})})
    found = discover_submissions(folder, tmp_path / "unpacked")
    return grade_submission(_job(loaded, cache_dir, found.submissions[0], **limits))


def _grade_run(loaded, cache_dir: Path, tmp_path: Path, entries: dict, *, hidden=None,
               timeout_s: float = 30, memory_mb: int = 2048, **limits) -> dict[str, GradeRow]:
    """A whole grading run (discovery, skip, fan-out, gradebook) as `secureml grade` does it."""
    folder = _submissions(tmp_path / "submissions", entries)
    settings = GradeSettings(limits=Limits(timeout_s=timeout_s, memory_mb=memory_mb, **limits),
                             cache_dir=cache_dir, pictures=False, automatic_variant=False)
    with Gradebook.open(tmp_path / "gradebook.db") as book:
        report = grade_workshop(loaded, folder, book, settings, hidden=hidden)
        stored = {row.trainee: row for row in book.rows(loaded.id)}
    assert {row.trainee for row in report.graded} == set(stored), "every graded row is stored"
    return stored


def _marker() -> str:
    """A process name (comm, at most 15 characters) that only this test's payload uses."""
    return "sml" + uuid.uuid4().hex[:12]


def _survivors(marker: str) -> list[str]:
    return subprocess.run(["pgrep", "-x", marker], capture_output=True, text=True).stdout.split()


def _leftovers_of(pid: int) -> list[Path]:
    """The run cgroups and scratch folders a grader with this pid made and has not removed."""
    plan = isolation.capabilities().cgroup_plan
    parents = list(plan.parents.values()) if plan else []
    found = [group for parent in parents for group in parent.glob(f"secureml-sandbox-{pid}-*")]
    return found + sorted(Path(tempfile.gettempdir()).glob(f"secureml-*-{pid}-*"))


def _wait_until(condition, timeout_s: float, step_s: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step_s)
    return condition()


# --------------------------------------------------------------------------- what it can reach


@needs_bwrap
@pytest.mark.isolation
def test_network_is_unreachable_and_the_run_goes_on(poisoning, session_cache, tmp_path):
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(0.1)
        port = listener.getsockname()[1]
        rows = _grade_run(poisoning, session_cache, tmp_path, {
            "a_phones_home": ("network", {"loopback_port": port}),
            "b_honest": "all_indices",
        })
        with pytest.raises(socket.timeout):
            listener.accept()  # nobody ever connected to the grader's loopback
    assert rows["a_phones_home"].status == "ok", rows["a_phones_home"].error  # no NETWORK REACHED
    assert rows["a_phones_home"].score == 0.0
    assert rows["b_honest"].status == "ok"


@needs_bwrap
@pytest.mark.isolation
def test_submission_cannot_see_the_test_set_gradebook_cache_or_other_trainees(poisoning, session_cache, tmp_path):
    # Secrets outside /tmp too: the sandbox's private /tmp would hide anything under it anyway.
    outside = Path(tempfile.mkdtemp(prefix="secureml-test-secrets-", dir="/var/tmp"))
    try:
        gradebook_path = outside / "gradebook.db"
        with Gradebook.open(gradebook_path):
            pass
        cached = sorted(session_cache.rglob("*.safetensors"))
        secrets = [
            str(REPO / "datasets" / "mnist-5k.npz"),  # the test set is drawn from here
            str(REPO / "scenarios" / "poisoning-01.yaml"),  # the attack's parameters
            str(REPO / "labs" / "poisoning-01" / "solution.py"),
            str(REPO / "tests"),
            str(gradebook_path), str(tmp_path / "gradebook.db"),
            str(session_cache), *map(str, cached[:5]),
            str(tmp_path / "submissions" / "b_neighbour.py"),
            str(Path.home() / ".cache"),
        ]
        rows = _grade_run(poisoning, session_cache, tmp_path, {
            "a_snoop": ("snoop", {"secret_paths": secrets, "allowed_inputs": POISONING_INPUTS}),
            "b_neighbour": "all_indices",
        })
    finally:
        shutil.rmtree(outside)
    assert rows["a_snoop"].status == "ok", rows["a_snoop"].error  # not "LEAK: ..."


# --------------------------------------------------------------------------- what it can fake


@needs_bwrap
def test_monkeypatching_numpy_torch_and_secureml_in_the_child_leaves_the_score_unchanged(
        poisoning, session_cache, tmp_path, honest):
    row = _grade_one(poisoning, session_cache, tmp_path, "monkeypatch")
    assert row.status == "ok", row.error
    assert row.score == honest.score == 0.0
    assert dict(row.metrics) == dict(honest.metrics)


@needs_bwrap
def test_printed_fake_score_and_written_results_json_are_ignored(poisoning, session_cache, tmp_path, honest):
    grader_dirs = [str(tmp_path), str(session_cache), str(REPO)]
    row = _grade_one(poisoning, session_cache, tmp_path, "fake_score", params={"grader_dirs": grader_dirs})
    assert row.status == "ok", row.error
    assert row.score == honest.score == 0.0
    assert not any((Path(folder) / "results.json").exists() for folder in grader_dirs)


@needs_bwrap
@pytest.mark.parametrize("payload", ["exit_sys", "exit_os"])
def test_exiting_before_returning_is_no_result(poisoning, session_cache, tmp_path, payload):
    row = _grade_one(poisoning, session_cache, tmp_path, payload)
    assert row.status == "no-result", row
    assert row.score is None and "without returning a result" in row.error


@needs_bwrap
def test_malicious_pickle_result_is_rejected_even_with_torch_force_no_weights_only_load(
        poisoning, session_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "pwned"
    row = _grade_one(poisoning, session_cache, tmp_path, "pickle_result", params={"marker": str(marker)})
    assert row.status == "invalid-result", row
    assert not marker.exists(), "the grader unpickled the submission's result"


@needs_bwrap
def test_pickle_shipped_as_weights_in_a_folder_submission_is_never_loaded(
        poisoning, session_cache, tmp_path, monkeypatch):
    import pickle

    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    folder = tmp_path / "submissions" / "mallory"
    folder.mkdir(parents=True)
    (folder / "mitigation.py").write_text(_payload("ships_pickle"))
    (folder / "weights.pt").write_bytes(pickle.dumps({"state_dict": Payload()}))
    found = discover_submissions(tmp_path / "submissions", tmp_path / "unpacked")
    row = grade_submission(_job(poisoning, session_cache, found.submissions[0]))
    assert row.status == "ok", row.error
    assert not marker.exists()


@needs_bwrap
@pytest.mark.parametrize("kind", ["wrong-shape", "nan", "huge-number", "extra-output", "garbage",
                                  "string-metadata", "deep-nesting", "huge-claim"])
def test_malformed_results_are_invalid_result(poisoning, session_cache, tmp_path, kind):
    row = _grade_one(poisoning, session_cache, tmp_path, "malformed_result", params={"kind": kind})
    assert row.status == "invalid-result", row
    assert row.score is None and row.error


@needs_bwrap
def test_oversized_result_is_invalid_result(poisoning, session_cache, tmp_path):
    row = _grade_one(poisoning, session_cache, tmp_path, "oversized_result", max_result_bytes=1024 * 1024)
    assert row.status == "invalid-result", row
    assert "larger than" in row.error


# --------------------------------------------------------------------------- time, processes


@needs_bwrap
@pytest.mark.isolation
def test_endless_loop_and_sleep_time_out_and_the_next_submission_is_graded(poisoning, session_cache, tmp_path):
    started = time.monotonic()
    rows = _grade_run(poisoning, session_cache, tmp_path, {
        "a_loop": "endless_loop", "b_sleep": "sleep_forever", "c_honest": "all_indices",
    }, timeout_s=4)
    # --timeout counts a run's own time. A machine so busy that the loop gets less than a
    # third of a CPU reaches the wall-clock cap first: then the grader, not the trainee, is
    # said to have failed (infra-error, graded again by the next run).
    loop = rows["a_loop"]
    assert loop.status == "timeout" or (loop.status == "infra-error" and "too busy" in loop.error), loop
    assert rows["b_sleep"].status == "timeout"
    assert rows["c_honest"].status == "ok"
    assert time.monotonic() - started < 60


@needs_bwrap
@pytest.mark.isolation
def test_double_forked_daemon_neither_hangs_the_grader_nor_survives(poisoning, session_cache, tmp_path):
    marker = _marker()
    row = _grade_one(poisoning, session_cache, tmp_path, "daemon", params={"marker": marker}, timeout_s=60)
    assert row.status == "ok", row.error
    assert row.timings_s["sandbox"] < 15, "the daemon held the pipes open until the timeout"
    assert _survivors(marker) == []


@needs_bwrap
@pytest.mark.isolation
def test_200_sleepers_are_stopped_by_the_process_limit(poisoning, session_cache, tmp_path):
    global _process_limit_proven
    marker = _marker()
    row = _grade_one(poisoning, session_cache, tmp_path, "sleepers", params={"marker": marker},
                     timeout_s=10, max_processes=32)
    assert row.status == "error", row
    started = int(row.error.split("started ")[1].split()[0])
    assert started < 32 and "Resource temporarily unavailable" in row.error, row.error
    assert _wait_until(lambda: _survivors(marker) == [], 5)
    _process_limit_proven = True


@needs_bwrap
@pytest.mark.isolation
def test_fork_bomb_is_contained_and_leaves_no_survivors(poisoning, session_cache, tmp_path):
    if not _process_limit_proven:
        pytest.skip("the bounded process-limit test did not pass first; no fork bomb today")
    marker = _marker()
    started = time.monotonic()
    rows = _grade_run(poisoning, session_cache, tmp_path, {
        "a_bomb": ("fork_bomb", {"marker": marker}), "b_honest": "all_indices",
    }, timeout_s=4, max_processes=32)
    assert rows["a_bomb"].status == "timeout", rows["a_bomb"]
    assert rows["b_honest"].status == "ok"
    assert time.monotonic() - started < 60
    assert _survivors(marker) == []


@needs_bwrap
@pytest.mark.isolation
def test_a_sandbox_of_nine_busy_processes_gets_one_cpu_share(tmp_path):
    """Bounded: the CPU limit grading uses (one CPU per child thread) holds a small hog.
    The 60-process hog below runs only after this passed."""
    global _cpu_share_proven
    inputs = tmp_path / "inputs"
    inputs.mkdir(mode=0o755)
    inputs.chmod(0o755)
    hog = ("import os, time\n"
           "for _ in range(8):\n"
           "    if os.fork() == 0:\n"
           "        os.setsid()\n"
           "        while True: pass\n"
           "end = time.monotonic() + 2\n"
           "while time.monotonic() < end: pass\n")
    result = sandbox.run_sandboxed([sys.executable, "-c", hog], inputs_dir=inputs,
                                   limits=Limits(timeout_s=10, cpus=1.0))
    assert result.outcome == "exited", result
    assert result.cpu_s <= result.wall_s * 1.1 + sandbox._THROTTLE_BURST_S + 0.2, result
    _cpu_share_proven = True


@needs_bwrap
@pytest.mark.isolation
@pytest.mark.slow
def test_an_honest_submission_beside_a_hog_of_sixty_sessions_finishes_ok_under_two_jobs(poisoning, tmp_path):
    """Measured before the fix: a submission needing 10 s of CPU was killed at its 60 s
    timeout beside one that started 60 busy processes, each in its own session. Now each
    sandbox gets one CPU's share and quota, and waiting for a CPU others hold is not charged."""
    if not _cpu_share_proven:
        pytest.skip("the bounded CPU-share test did not pass first; no hog today")
    folder = _submissions(tmp_path / "submissions", {
        "a_hog": ("hog", {"count": 60, "seconds": 12}),
        "b_honest": ("honest_cpu", {"cpu_s": 6}),
    })
    db = tmp_path / "gradebook.db"
    done = secureml("grade", "poisoning-01", str(folder), "--db", str(db), "--jobs", "2",
                    "--timeout", "30", "--json", timeout_s=600)
    assert done.returncode == 0, done.stderr
    rows = {row["trainee"]: row for row in json.loads(done.stdout)["graded"]}
    assert rows["b_honest"]["status"] == "ok", rows["b_honest"]
    assert rows["a_hog"]["status"] == "ok", rows["a_hog"]  # the hog itself returned in time


# --------------------------------------------------------------------------- memory, output, disk


@needs_bwrap
@pytest.mark.isolation
def test_memory_hogs_are_stopped_and_the_grader_survives(poisoning, session_cache, tmp_path):
    rows = _grade_run(poisoning, session_cache, tmp_path, {
        "a_bytearray": "allocate_8gb", "b_touched": "grow_memory", "c_honest": "all_indices",
    }, memory_mb=1024)
    # 8 GB at once never gets its address space: the trainee's code raises MemoryError, an
    # error of theirs, explained. Memory touched page by page meets the enforced limit.
    assert rows["a_bytearray"].status == "error", rows["a_bytearray"]
    assert "MemoryError" in rows["a_bytearray"].error and "address space" in rows["a_bytearray"].error
    assert rows["b_touched"].status == "memory", rows["b_touched"]
    limit_by = "cgroup" if isolation.capabilities().cgroup_plan else "supervisor"
    assert limit_by in rows["b_touched"].error
    assert rows["c_honest"].status == "ok"


@needs_bwrap
def test_the_status_comes_from_the_supervisor_not_the_childs_exit_code_or_stderr(
        poisoning, session_cache, tmp_path, honest):
    rows = _grade_run(poisoning, session_cache, tmp_path, {
        "a_exit_152": "exit_152", "b_fake_memory_error": "fake_memory_error",
    })
    # A valid result, then exit status 152 (SIGXCPU's as bwrap reports it): no CPU limit
    # was hit, so the result is graded.
    assert rows["a_exit_152"].status == "ok", rows["a_exit_152"]
    assert rows["a_exit_152"].score == honest.score
    assert any("after it sent its result" in flag for flag in rows["a_exit_152"].flags)
    # A last stderr line of MemoryError is only a line of text.
    assert rows["b_fake_memory_error"].status == "no-result", rows["b_fake_memory_error"]


@needs_bwrap
def test_100_mb_of_stdout_is_capped(poisoning, session_cache, tmp_path):
    row = _grade_one(poisoning, session_cache, tmp_path, "chatty")
    assert row.status == "ok", row.error
    assert any(flag.startswith("output-truncated") for flag in row.flags), row.flags
    assert row.timings_s["sandbox"] < 20


@needs_bwrap
def test_writing_1_gb_to_disk_fails_everywhere(poisoning, session_cache, tmp_path):
    row = _grade_one(poisoning, session_cache, tmp_path, "disk_filler",
                     params={"grader_dirs": [str(tmp_path), str(session_cache)]})
    assert row.status == "error", row
    report = row.error.split("disk report: ")[1]
    written = [int(entry.split(": ")[1].split(" MB")[0]) for entry in report.split("; ")]
    assert len(written) == 6 and max(written) < 1024, report
    assert not (tmp_path / "filler.bin").exists()


# --------------------------------------------------------------------------- submissions


def _zip(path: Path, entries: list[tuple[str, bytes]], symlink: tuple[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as bundle:
        for name, data in entries:
            bundle.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink[0])
            info.external_attr = (0o120777 << 16)  # a symbolic link, as `zip -y` stores one
            bundle.writestr(info, symlink[1])
    return path


@pytest.mark.parametrize("entry, why", [
    ("../escape.py", "climbs out"),
    ("submissions/../../escape.py", "climbs out"),
    ("/etc/cron.d/escape.py", "absolute path"),
    ("C:/escape.py", "drive letter"),
    ("..\\escape.py", "backslash"),
])
def test_zip_with_escaping_paths_is_rejected_and_nothing_is_written(tmp_path, entry, why):
    archive = _zip(tmp_path / "submissions.zip", [("alice.py", b"def sanitize(x, y, tools): pass\n"),
                                                  (entry, b"print('escaped')\n")])
    unpack = tmp_path / "deep" / "unpack"
    with pytest.raises(SubmissionsError, match=why) as caught:
        discover_submissions(archive, unpack)
    assert entry in caught.value.message()
    assert not (tmp_path / "escape.py").exists() and not (tmp_path / "deep" / "escape.py").exists()
    assert not list(unpack.rglob("*.py"))


def test_zip_with_a_symlink_is_rejected(tmp_path):
    archive = _zip(tmp_path / "submissions.zip", [("alice.py", b"def sanitize(x, y, tools): pass\n")],
                   symlink=("bob/mitigation.py", "/etc/shadow"))
    with pytest.raises(SubmissionsError, match="symbolic link") as caught:
        discover_submissions(archive, tmp_path / "unpack")
    assert "bob/mitigation.py" in caught.value.message()


def test_zip_bomb_is_stopped_at_the_size_bound(tmp_path, monkeypatch):
    monkeypatch.setattr(grading_submissions, "MAX_ZIP_BYTES", 1024 * 1024)
    archive = tmp_path / "submissions.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr("alice.py", b"#" * (8 * 1024 * 1024))  # 8 MB that compresses to ~8 kB
    assert archive.stat().st_size < 100_000
    with pytest.raises(SubmissionsError, match="more than"):
        grading_submissions._unpack_zip(archive, tmp_path / "unpack", max_bytes=grading_submissions.MAX_ZIP_BYTES)


def test_zip_of_a_submissions_folder_is_unpacked_and_hashed_by_content(tmp_path):
    code = b"import numpy as np\n\ndef sanitize(x, y, tools):\n    return np.arange(len(y))\n"
    archive = _zip(tmp_path / "submissions.zip", [
        ("submissions/alice.py", code),
        ("submissions/bob/mitigation.py", code),
        ("submissions/bob/helper.py", b"X = 1\n"),
        ("submissions/carol/mitigation.py", code),
        ("submissions/notes.txt", b"not a submission"),
        ("__MACOSX/submissions/._alice.py", b"junk"),
    ])
    found = discover_submissions(archive, tmp_path / "unpack")
    by_trainee = {submission.trainee: submission for submission in found.submissions}
    assert sorted(by_trainee) == ["alice", "bob", "carol"]
    assert [relative for relative, _ in by_trainee["bob"].files] == ["helper.py", "mitigation.py"]
    # The same file handed in as alice.py or carol/mitigation.py is the same submission.
    assert by_trainee["alice"].sha256 == by_trainee["carol"].sha256 != by_trainee["bob"].sha256
    assert any("notes.txt" in note for note in found.notes)


@needs_bwrap
def test_folder_submissions_import_their_helpers_and_broken_ones_are_errors(poisoning, session_cache, tmp_path):
    folder = tmp_path / "submissions"
    (folder / "alice").mkdir(parents=True)
    (folder / "alice" / "mitigation.py").write_text(_payload("uses_helper"))
    (folder / "alice" / "helper_module.py").write_text(_payload("helper_module"))
    (folder / "bob").mkdir()
    (folder / "bob" / "sanitize.py").write_text(_payload("all_indices"))
    (folder / "carol").mkdir()
    (folder / "carol" / "mitigation.py").write_text(_payload("all_indices"))
    (folder / "carol" / "passwords").symlink_to("/etc/shadow")
    settings = GradeSettings(limits=Limits(timeout_s=30, memory_mb=2048), cache_dir=session_cache, pictures=False,
                             automatic_variant=False)
    with Gradebook.open(tmp_path / "gradebook.db") as book:
        report = grade_workshop(poisoning, folder, book, settings)
    rows = {row.trainee: row for row in report.graded}
    assert rows["alice"].status == "ok", rows["alice"].error
    assert rows["bob"].status == "error" and "no mitigation.py" in rows["bob"].error
    assert "sanitize.py" in rows["bob"].error
    assert rows["carol"].status == "error" and "symbolic link" in rows["carol"].error


# --------------------------------------------------------------------------- the grading run


@needs_bwrap
@pytest.mark.slow
@pytest.mark.parametrize("scenario_id", ["evasion-01", "evasion-02", "inversion-01", "inversion-02"])
def test_every_family_grades_its_reference_above_its_starter_in_the_sandbox(scenario_id, session_cache,
                                                                            tmp_path):
    # The grader knows no family: each one's lab files go through the same sandbox and worker.
    loaded = scenario.load(scenario_id)
    folder = tmp_path / "submissions"
    folder.mkdir()
    for trainee, lab_file in (("reference", "solution.py"), ("starter", "mitigation.py")):
        shutil.copy(REPO / "labs" / scenario_id / lab_file, folder / f"{trainee}.py")
    settings = GradeSettings(limits=Limits(timeout_s=300, memory_mb=3072), cache_dir=session_cache,
                             automatic_variant=False)
    with Gradebook.open(tmp_path / "gradebook.db") as book:
        grade_workshop(loaded, folder, book, settings)
        rows = {row.trainee: row for row in book.rows(scenario_id)}
    assert rows["reference"].status == rows["starter"].status == "ok", (
        rows["reference"].error, rows["starter"].error)
    assert rows["reference"].score >= 70 > rows["starter"].score
    assert rows["reference"].picture_png.startswith(b"\x89PNG")


@needs_bwrap
def test_same_submission_graded_twice_gets_the_same_score(poisoning, session_cache, tmp_path):
    # A submission that really filters, so that the grader retrains and measures a new model.
    folder = _submissions(tmp_path / "submissions", {"alice": "trigger_oracle"})
    settings = GradeSettings(limits=Limits(timeout_s=60, memory_mb=2048), cache_dir=session_cache,
                             regrade=True, automatic_variant=False)
    with Gradebook.open(tmp_path / "gradebook.db") as book:
        first = grade_workshop(poisoning, folder, book, settings).graded[0]
        second = grade_workshop(poisoning, folder, book, settings).graded[0]
        assert len(book.rows()) == 1, "a regrade replaces the row of the same submission"
        assert book.rows()[0].taxonomy == poisoning.taxonomy()  # what every export names
    assert first.status == second.status == "ok", (first.error, second.error)
    assert first.score == second.score >= 95.0
    assert dict(first.metrics) == dict(second.metrics) and dict(first.parts) == dict(second.parts)
    assert first.metrics["mitigated.poison_removed"] == 1.0
    assert first.submission_sha256 == second.submission_sha256
    assert first.picture_png and first.picture_png.startswith(b"\x89PNG")


def test_the_automatic_variant_is_on_by_default_and_comes_from_the_gradebooks_kept_seed(tmp_path):
    public = scenario.load("poisoning-01")
    with Gradebook.open(tmp_path / "g.db") as book:
        first = automatic_variant(public, book, GradeSettings())  # on by default
        again = automatic_variant(public, book, GradeSettings())
        given = automatic_variant(public, book, GradeSettings(variant_seed=VARIANT_SEED))
        assert automatic_variant(public, book, GradeSettings(automatic_variant=False)) is None
    assert first.config_sha256() == again.config_sha256() != public.config_sha256()
    assert first.seed != public.seed
    assert given.config_sha256() not in (first.config_sha256(), public.config_sha256())


@needs_bwrap
@pytest.mark.slow
def test_a_defence_hard_coded_to_the_public_scenario_scores_the_lower_variant_score(
        poisoning, session_cache, tmp_path):
    """Hard-coding poisoning-01's public trigger and target scored 100 until every graded
    run also met an automatic variant (issue 11): now its grade is the variant's, about 0,
    while the reference keeps a high score on both."""
    folder = tmp_path / "submissions"
    folder.mkdir()
    shutil.copyfile(REPO / "labs" / "poisoning-01" / "solution.py", folder / "reference.py")
    shutil.copyfile(REPO / "tests" / "gaming" / "poisoning_public_trigger.py", folder / "hardcoded.py")
    settings = GradeSettings(limits=Limits(timeout_s=300, memory_mb=3072), cache_dir=session_cache,
                             pictures=False, variant_seed=VARIANT_SEED)
    with Gradebook.open(tmp_path / "g.db") as book:
        report = grade_workshop(poisoning, folder, book, settings)
        rerun = grade_workshop(poisoning, folder, book, settings)
    rows = {row.trainee: row for row in report.graded}
    assert report.automatic_variant and len(rerun.skipped) == 2
    reference, hardcoded = rows["reference"], rows["hardcoded"]
    assert reference.status == hardcoded.status == "ok", (reference.error, hardcoded.error)
    for row in rows.values():
        assert row.score == min(row.metrics["public.score"], row.metrics["variant.score"])
        assert any("lower of the two" in line for line in row.feedback)
    assert reference.score >= 80
    assert hardcoded.metrics["public.score"] >= 80 and hardcoded.score <= 10


@needs_bwrap
@pytest.mark.slow
@pytest.mark.parametrize(("scenario_id", "owasp"), [("membership-01", "ML04"), ("extraction-01", "ML05")])
def test_the_privacy_and_theft_labs_grade_in_the_sandbox_on_their_automatic_variant(scenario_id, owasp,
                                                                                   session_cache, tmp_path):
    # The two families of issue 13 through the same grader: sandbox, worker, automatic variant.
    loaded = scenario.load(scenario_id)
    folder = tmp_path / "submissions"
    folder.mkdir()
    for trainee, lab_file in (("reference", "solution.py"), ("starter", "mitigation.py")):
        shutil.copy(REPO / "labs" / scenario_id / lab_file, folder / f"{trainee}.py")
    settings = GradeSettings(limits=Limits(timeout_s=300, memory_mb=3072), cache_dir=session_cache,
                             pictures=False, variant_seed=VARIANT_SEED)
    with Gradebook.open(tmp_path / "gradebook.db") as book:
        report = grade_workshop(loaded, folder, book, settings)
    rows = {row.trainee: row for row in report.graded}
    assert report.automatic_variant
    assert rows["reference"].status == rows["starter"].status == "ok", (
        rows["reference"].error, rows["starter"].error)
    for row in rows.values():
        assert row.score == min(row.metrics["public.score"], row.metrics["variant.score"])
        assert row.taxonomy["owasp"] == owasp
    assert rows["reference"].score >= 80 and rows["starter"].score <= 10


def test_a_failure_on_the_variant_shows_its_kind_and_line_never_its_message():
    from secureml.grading.job import _variant_error

    row = GradeRow(
        scenario_id="poisoning-01", trainee="t", submission_sha256="a" * 64, status="error",
        score=None, max_score=100.0, parts={}, metrics={}, flags=[], feedback=[],
        error="sanitize raised ValueError: the target is 7 (mitigation.py, line 12)",
        timings_s={}, seed=1, config_sha256="b" * 64, hidden_variant=False, versions={},
        picture_png=None, graded_at="2026-11-30T00:00:00Z",
    )
    assert _variant_error(row) == "Your code raised ValueError (mitigation.py, line 12)."


@needs_bwrap
def test_hidden_variant_is_recorded_as_such_not_its_contents(poisoning, session_cache, tmp_path):
    secret_hint, secret_drop = "SECRET-HIDDEN-HINT-7f3a9c", "0.04371"
    overrides = tmp_path / "hidden.yaml"
    overrides.write_text(f"scoring:\n  max_clean_accuracy_drop: {secret_drop}\n"
                         f"hints:\n  kept_everything: {secret_hint}\n")
    variant = scenario.apply_overrides(poisoning, overrides)
    assert variant.config_sha256() != poisoning.config_sha256()
    db = tmp_path / "gradebook.db"
    rows = _grade_run(poisoning, session_cache, tmp_path, {"alice": "all_indices"}, hidden=variant)
    row = rows["alice"]
    assert row.status == "ok" and row.hidden_variant is True
    assert row.config_sha256 == variant.config_sha256()
    assert row.seed == poisoning.seed
    assert list(row.feedback) == [HIDDEN_VARIANT_FEEDBACK]
    written = b"".join(path.read_bytes() for path in tmp_path.glob("gradebook.db*"))
    (tmp_path / "exports").mkdir()
    (tmp_path / "roster.csv").write_text("trainee,name,lms_id,sis_user_id,sis_login_id,section,email\n"
                                         "alice,Alice,1,S-1,alice,A,alice@example.edu\n")
    for fmt, spec in EXPORT_FORMATS.items():
        needs_roster = "roster" in spec.options
        options = ExportOptions(roster=load_roster(tmp_path / "roster.csv")) if needs_roster else ExportOptions()
        for path in export(rows.values(), fmt, tmp_path / "exports" / fmt, options):
            written += path.read_bytes()
    assert secret_hint.encode() not in written and secret_drop.encode() not in written
    # Grading the public scenario afterwards regrades: the config differs.
    settings = GradeSettings(limits=Limits(timeout_s=30, memory_mb=2048), cache_dir=session_cache, pictures=False,
                             automatic_variant=False)
    with Gradebook.open(db) as book:
        public = grade_workshop(poisoning, tmp_path / "submissions", book, settings)
    assert [r.hidden_variant for r in public.graded] == [False]


@needs_bwrap
def test_under_a_hidden_variant_trainees_see_an_errors_kind_and_line_not_its_text(
        poisoning, session_cache, tmp_path):
    secret = "SECRET-TARGET-7"
    overrides = tmp_path / "hidden.yaml"
    overrides.write_text("scoring:\n  max_clean_accuracy_drop: 0.04\n")
    variant = scenario.apply_overrides(poisoning, overrides)
    rows = _grade_run(poisoning, session_cache, tmp_path,
                      {"alice": ("raises_secret", {"secret": secret})}, hidden=variant)
    row = rows["alice"]
    assert row.status == "error" and secret in row.error  # the instructor's view keeps it all
    seen = json.dumps(gradescope_results(row))
    assert secret not in seen
    assert "ValueError" in seen and "mitigation.py, line 8" in seen
    public = gradescope_results(dataclasses.replace(row, hidden_variant=False))
    assert secret in json.dumps(public)


def test_hidden_overrides_are_validated_against_the_scenario_schema(tmp_path):
    overrides = tmp_path / "hidden.yaml"
    overrides.write_text("attack:\n  target_class: 42\n")
    with pytest.raises(ConfigError):
        scenario.apply_overrides(scenario.load("poisoning-01"), overrides)


@needs_bwrap
def test_a_failing_executor_or_sandbox_becomes_an_infra_error_row(poisoning, session_cache, tmp_path, monkeypatch):
    class Crashing:
        workers = 1

        def map_unordered(self, fn, jobs):
            for job in jobs:
                yield job, RuntimeError("worker process died")

    folder = _submissions(tmp_path / "submissions", {"alice": "all_indices"})
    settings = GradeSettings(limits=Limits(timeout_s=30), cache_dir=session_cache, pictures=False,
                             automatic_variant=False)
    with Gradebook.open(tmp_path / "gradebook.db") as book:
        report = grade_workshop(poisoning, folder, book, settings, executor=Crashing())
        assert [row.status for row in book.rows()] == ["infra-error"]
    assert "worker process died" in report.infra_errors[0].error

    def broken_sandbox(*args, **kwargs):
        raise OSError("no more file descriptors")

    monkeypatch.setattr(grading_job, "run_sandboxed", broken_sandbox)
    found = discover_submissions(folder, tmp_path / "unpacked")
    row = grade_submission(_job(poisoning, session_cache, found.submissions[0]))
    assert row.status == "infra-error" and "no more file descriptors" in row.error


@needs_bwrap
def test_when_no_automatic_variant_can_be_built_the_run_grades_the_public_scenario_and_says_so(
        poisoning, session_cache, tmp_path, monkeypatch):
    from secureml import variants

    def refused(variant):  # what a stage whose backdoor did not take hold raises
        raise ConfigError("the backdoor did not take hold: victim ASR 0.08")

    monkeypatch.setattr(grading_workshop, "first_valid_variant",
                        lambda graded, seed, build: variants.first_valid_variant(graded, seed, refused))
    folder = _submissions(tmp_path / "submissions", {"alice": "all_indices"})
    settings = GradeSettings(limits=Limits(timeout_s=30), cache_dir=session_cache, pictures=False)
    with Gradebook.open(tmp_path / "gradebook.db") as book:
        report = grade_workshop(poisoning, folder, book, settings)
        assert [row.status for row in book.rows()] == ["ok"]
    assert not report.automatic_variant
    assert any("public scenario only" in note and "did not take hold" in note for note in report.notes)


def test_grade_refuses_untrusted_code_without_bubblewrap_unless_unsafe(tmp_path, monkeypatch):
    monkeypatch.setattr(
        grading_workshop, "isolation_problem", lambda: "bwrap is not installed (Debian package bubblewrap)"
    )
    with pytest.raises(IsolationUnavailable, match="--unsafe"):
        grading_workshop.resolve_isolation(unsafe=False)
    assert grading_workshop.resolve_isolation(unsafe=True) is True
    folder = _submissions(tmp_path / "submissions", {"alice": "all_indices"})
    result = CliRunner().invoke(cli, ["grade", "poisoning-01", str(folder), "--db", str(tmp_path / "g.db")])
    assert result.exit_code == IsolationUnavailable.exit_code
    assert "bwrap is not installed" in result.output and "--unsafe" in result.output


@needs_bwrap
def test_unsafe_fallback_says_so_loudly_and_flags_the_rows(poisoning, session_cache, tmp_path, monkeypatch):
    monkeypatch.setattr(grading_workshop, "isolation_problem", lambda: "bwrap is not installed")
    folder = _submissions(tmp_path / "submissions", {"alice": "all_indices"})
    result = CliRunner().invoke(cli, ["grade", "poisoning-01", str(folder), "--db", str(tmp_path / "g.db"),
                                      "--unsafe", "--json", "--timeout", "30"])
    assert result.exit_code == 0, result.output
    assert "WARNING: --unsafe" in result.stderr
    payload = json.loads(result.stdout)
    assert payload["isolation"] == "unsafe-subprocess"
    assert any(flag.startswith("unisolated") for flag in payload["graded"][0]["flags"])


# --------------------------------------------------------------------------- the command line


@needs_bwrap
def test_kill_9_mid_run_keeps_earlier_rows_and_the_rerun_grades_only_the_rest(poisoning, tmp_path):
    marker = _marker()
    folder = _submissions(tmp_path / "submissions", {
        "a_first": "all_indices", "b_second": "all_indices",
        "c_stuck": ("sleep_forever", {"marker": marker}), "d_last": "all_indices",
    })
    db = tmp_path / "gradebook.db"
    grader = subprocess.Popen(
        [sys.executable, "-m", "secureml.cli", "grade", "poisoning-01", str(folder), "--db", str(db),
         "--timeout", "300", "--json"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        # Submissions run in name order: once c_stuck sleeps, a and b are stored.
        assert _wait_until(lambda: _survivors(marker) != [] or grader.poll() is not None, 180), "c never started"
        assert grader.poll() is None, grader.stderr.read().decode()
        grader.send_signal(signal.SIGKILL)
        grader.wait(timeout=30)
    finally:
        if grader.poll() is None:
            grader.kill()
            grader.wait()
    assert _wait_until(lambda: _survivors(marker) == [], 10), "the stuck submission outlived the grader"
    left = _leftovers_of(grader.pid)
    # A 0700 scratch folder with the training set and c_stuck's code, the unpack folder,
    # and (where writable) c_stuck's run cgroups: nothing removes them but the next grader.
    assert any(path.name.startswith(f"secureml-grade-{grader.pid}-") for path in left), left
    with sqlite3.connect(db) as connection:  # readable, and holds what was graded
        before = dict(connection.execute("SELECT trainee, graded_at FROM grades").fetchall())
    assert sorted(before) == ["a_first", "b_second"]

    rerun = secureml("grade", "poisoning-01", str(folder), "--db", str(db), "--timeout", "3", "--json")
    assert rerun.returncode == 0, rerun.stderr
    payload = json.loads(rerun.stdout)
    assert _leftovers_of(grader.pid) == [], "the next grader did not sweep the dead one's leftovers"
    assert all(any(str(path) in note for note in payload["notes"]) for path in left), payload["notes"]
    assert sorted(payload["skipped"]) == ["a_first", "b_second"]
    assert {row["trainee"]: row["status"] for row in payload["graded"]} == {"c_stuck": "timeout", "d_last": "ok"}
    with Gradebook.open(db) as book:
        after = {row.trainee: row for row in book.rows()}
    assert {name: after[name].graded_at for name in before} == before, "earlier rows were rewritten"
    assert sorted(after) == ["a_first", "b_second", "c_stuck", "d_last"]


@needs_bwrap
def test_two_jobs_record_rows_as_they_finish_and_ctrl_c_stops_at_once_leaving_no_survivors(
        poisoning, tmp_path):
    """--jobs 2 (a LocalPool of spawned workers): rows are stored as they arrive; Ctrl-C
    stops the run without waiting for the running submissions, and keeps what was graded."""
    marker = _marker()
    folder = _submissions(tmp_path / "submissions", {
        "a_first": "all_indices", "b_second": "exit_sys",
        "c_stuck": ("sleep_forever", {"marker": marker}), "d_stuck": ("sleep_forever", {"marker": marker}),
        "e_never": "all_indices",
    })
    db = tmp_path / "gradebook.db"
    # A shell starts a foreground command with SIGINT at its default and unblocked. This
    # process may hold it otherwise (a disposition or mask that the test session's helpers
    # left), and a child inherits both: a grader that inherits SIGINT ignored or blocked
    # never hears Ctrl-C. CI saw the grader still waiting in the pool 60 s after it, and its
    # stacks showed no KeyboardInterrupt at all.
    as_from_a_shell = (
        "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT}); "
        "runpy.run_module('secureml.cli', run_name='__main__', alter_sys=True)"
    )
    grader = subprocess.Popen(
        [sys.executable, "-c", as_from_a_shell, "grade", "poisoning-01", str(folder), "--db", str(db),
         "--timeout", "300", "--jobs", "2"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )
    try:
        assert _wait_until(lambda: len(_survivors(marker)) == 2 or grader.poll() is not None, 180)
        assert grader.poll() is None, grader.stderr.read().decode()
        signals = [line for line in Path(f"/proc/{grader.pid}/status").read_text().splitlines()
                   if line.startswith(("SigBlk", "SigIgn", "SigCgt"))]
        os.killpg(grader.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        started = time.monotonic()
        try:
            _, stderr = grader.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            # Seen a few times in CI on a loaded machine, never alone: ask the grader where
            # it is (its threads' stacks, see cli._stacks_on_sigusr1) before failing.
            os.kill(grader.pid, signal.SIGUSR1)
            time.sleep(3)
            os.killpg(grader.pid, signal.SIGKILL)
            _, stderr = grader.communicate()
            pytest.fail(f"the grader was still running 60 s after Ctrl-C ({'; '.join(signals)} before it); "
                        "what it printed, then its threads:\n" + stderr.decode(errors="replace"))
        assert time.monotonic() - started < 15, "the grader waited for the running submissions"
    finally:
        if grader.poll() is None:
            os.killpg(grader.pid, signal.SIGKILL)
            grader.wait()
    assert grader.returncode == 130 and b"interrupted" in stderr
    assert _wait_until(lambda: _survivors(marker) == [], 10)
    with Gradebook.open(db) as book:
        assert {row.trainee: row.status for row in book.rows()} == {"a_first": "ok", "b_second": "no-result"}


def test_grade_command_rejects_an_unsafe_zip_naming_the_entry(tmp_path):
    archive = _zip(tmp_path / "submissions.zip", [("alice.py", b"def sanitize(x, y, tools): pass\n"),
                                                  ("../../evil.py", b"import os\n")])
    result = secureml("grade", "poisoning-01", str(archive), "--db", str(tmp_path / "g.db"), "--unsafe")
    assert result.returncode == SubmissionsError.exit_code, result.stderr
    assert "../../evil.py" in result.stderr and "climbs out" in result.stderr
    assert not (tmp_path.parent / "evil.py").exists()


def test_gradebook_command_shows_and_exports_without_running_anything(tmp_path):
    from test_gradebook import make_row

    db = tmp_path / "gradebook.db"
    with Gradebook.open(db) as book:
        book.record(make_row("alice"))
        book.record(make_row("bob", status="timeout", score=None, error="killed after 600 s"))
    runner = CliRunner()
    shown = runner.invoke(cli, ["gradebook", "--db", str(db)])
    assert shown.exit_code == 0, shown.output
    assert "alice" in shown.output and "timeout" in shown.output
    as_json = json.loads(runner.invoke(cli, ["gradebook", "--db", str(db), "--json"]).stdout)
    assert [row["trainee"] for row in as_json] == ["alice", "bob"]
    csv_path = tmp_path / "grades.csv"
    exported = runner.invoke(cli, ["gradebook", "--db", str(db), "--export", "csv", "--output", str(csv_path)])
    assert exported.exit_code == 0, exported.output
    assert csv_path.read_text().splitlines()[0].startswith("student_id,score,max_score,status")
    missing = runner.invoke(cli, ["gradebook", "--db", str(tmp_path / "nope.db")])
    assert missing.exit_code == 6 and "no gradebook" in missing.output


def test_cli_export_choices_match_the_gradebook_formats():
    assert tuple(EXPORT_FORMATS) == GRADE_EXPORT_FORMATS


@pytest.mark.parametrize("command", ["grade", "gradebook"])
def test_grade_help_is_instant_and_shows_examples(command):
    probe = (
        "import sys\n"
        "from secureml.cli import main\n"
        f"sys.argv = ['secureml', {command!r}, '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "sys.stderr.write('HEAVY=' + ','.join(m for m in ('torch', 'numpy', 'art') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO)
    assert result.stderr.rsplit("HEAVY=", 1)[1].strip() == "", result.stderr
    assert "Examples:" in result.stdout and f"secureml {command}" in result.stdout
