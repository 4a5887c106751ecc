"""Honest and CPU-bound: spends exactly PARAMS["cpu_s"] seconds of its own CPU time, then
keeps every index. It must finish `ok` whatever its neighbour does."""

import time

import numpy as np

PARAMS = {}


def sanitize(x, y, tools):
    start = time.process_time()
    while time.process_time() - start < PARAMS["cpu_s"]:
        pass
    return np.arange(len(y))
