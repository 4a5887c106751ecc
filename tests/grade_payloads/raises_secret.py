"""Raise an error whose message quotes PARAMS["secret"], as code that prints what it found in
the data might quote a hidden variant's target."""

PARAMS = {}


def sanitize(x, y, tools):
    raise ValueError(f"the trigger targets class {PARAMS['secret']}")
