import sys


def sanitize(x, y, tools):
    sys.exit(0)
