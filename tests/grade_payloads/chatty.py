"""Print 100 MB, then return an honest answer."""

import sys

import numpy as np


def sanitize(x, y, tools):
    line = b"all work and no play " * 50 + b"\n"
    for _ in range(100 * 1024 * 1024 // len(line)):
        sys.stdout.buffer.write(line)
    sys.stdout.flush()
    return np.arange(len(y))
