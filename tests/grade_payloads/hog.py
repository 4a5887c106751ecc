"""A CPU hog: PARAMS["count"] busy processes, each in its own session (so that the kernel's
per-session autogroups would favour them), busy itself for PARAMS["seconds"], then returns
every index. Only ever graded in the sandbox, after the bounded CPU-share test passed."""

import os
import time

import numpy as np

PARAMS = {}


def sanitize(x, y, tools):
    for _ in range(PARAMS["count"]):
        if os.fork() == 0:
            os.setsid()
            while True:
                pass
    deadline = time.monotonic() + PARAMS["seconds"]
    while time.monotonic() < deadline:
        pass
    return np.arange(len(y))
