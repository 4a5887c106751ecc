"""The sandboxed child of `secureml grade`: run one trainee's mitigation, send back raw outputs.

    python -m secureml.worker FAMILY MITIGATION_FILE INPUTS_DIR
    python -m secureml.worker --check FAMILY        (the grader's preflight)

It runs inside the sandbox and sees only INPUTS_DIR (what the family's `write_inputs`
wrote) and the trainee's own files. It imports the family's code and the result encoder,
nothing of the grader: no scenario file, no gradebook, no cache, no test set. Its only
answer is the bytes it writes to the result channel (the fd named by SECUREML_RESULT_FD);
the parent parses them strictly and scores them itself, so nothing the trainee's code does
in this process (printing, patching numpy, torch or secureml) can change a score.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from secureml.sandbox import RESULT_FD_ENV

# Exit code of a worker that could not even reach the trainee's code (bad arguments).
_USAGE_EXIT = 64
# What the preflight writes back: proves the sandbox can start Python, import secureml and
# the family, and use the result channel, before any trainee is graded.
CHECK_REPLY = b"secureml-worker-ready"
THREADS_ENV = "SECUREML_THREADS"


def _apply_thread_limit() -> None:
    """torch reads OMP_NUM_THREADS when it is imported; set it again if it already is.

    The sandbox counts threads as processes, and parallel graders share the machine's cores.
    """
    threads = os.environ.get(THREADS_ENV)
    if threads and threads.isdigit() and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(threads))


def _write_all(fd: int, blob: bytes) -> None:
    view = memoryview(blob)
    try:
        while view:
            written = os.write(fd, view)
            view = view[written:]
    except BrokenPipeError:
        pass  # the parent stopped reading (result over its size cap); it knows why
    finally:
        os.close(fd)


def main(argv: list[str]) -> int:
    try:
        result_fd = int(os.environ[RESULT_FD_ENV])
    except (KeyError, ValueError):
        print(f"secureml.worker: {RESULT_FD_ENV} is not set; this runs inside `secureml grade`.",
              file=sys.stderr)
        return _USAGE_EXIT
    from secureml.families import FAMILIES

    if len(argv) == 2 and argv[0] == "--check":
        FAMILIES[argv[1]].load()
        _write_all(result_fd, CHECK_REPLY)
        return 0
    if len(argv) != 3 or argv[0] not in FAMILIES:
        print("usage: python -m secureml.worker FAMILY MITIGATION_FILE INPUTS_DIR", file=sys.stderr)
        return _USAGE_EXIT
    family_name, mitigation, inputs = argv[0], Path(argv[1]), Path(argv[2])
    family = FAMILIES[family_name].load()
    _apply_thread_limit()
    # Helper modules shipped next to mitigation.py import as usual; appended, not
    # prepended, so that a trainee's file never shadows a library by accident.
    sys.path.append(str(mitigation.parent))

    from secureml.mitigation import run_in_child

    # A MemoryError in the trainee's function is an error result like any other: only
    # the grader's supervisor, which enforces the memory limit, may say "memory".
    blob = run_in_child(family, mitigation, inputs)
    _write_all(result_fd, blob)
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # the trainee may have closed or replaced it
            pass
    # os._exit, not sys.exit: the result is sent, and atexit hooks or non-daemon threads
    # the trainee left behind must not keep the process alive until the timeout.
    os._exit(code)
