"""Leave a double-forked daemon behind that holds stdout, stderr and the result pipe."""

import os
import time

import numpy as np

PARAMS = {}


def sanitize(x, y, tools):
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            with open("/proc/self/comm", "w") as comm:  # a name the test can look for
                comm.write(PARAMS["marker"])
            time.sleep(300)
        os._exit(0)
    return np.arange(len(y))
