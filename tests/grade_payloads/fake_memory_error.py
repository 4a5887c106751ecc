"""Claim to have run out of memory: print MemoryError as the last line of stderr and exit."""

import os
import sys

PARAMS = {}


def sanitize(x, y, tools):
    sys.stderr.write("Traceback (most recent call last):\nMemoryError\n")
    sys.stderr.flush()
    os._exit(1)
