"""A folder submission's mitigation.py that imports a module shipped next to it."""

from helper_module import keep_everything


def sanitize(x, y, tools):
    return keep_everything(y)
