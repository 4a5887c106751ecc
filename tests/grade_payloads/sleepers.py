"""Bounded: start up to 200 sleeping processes and report how many the limit allowed."""

import os
import time

PARAMS = {}


def sanitize(x, y, tools):
    with open("/proc/self/comm", "w") as comm:  # inherited by every child
        comm.write(PARAMS["marker"])
    started, error = 0, None
    for _ in range(200):
        try:
            pid = os.fork()
        except OSError as exc:
            error = exc.strerror
            break
        if pid == 0:
            time.sleep(60)
            os._exit(0)
        started += 1
    raise RuntimeError(f"started {started} sleepers, then: {error}")
