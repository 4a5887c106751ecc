"""Cutting text that is stored or shown to a bounded length. Only the standard library."""

from __future__ import annotations

# Errors a trainee's run produces are cut to this many characters where they are made
# (secureml.mitigation) and where they are stored (the gradebook row): the row is stored
# and shown for every submission, and a traceback's tail says what matters.
MAX_ERROR_CHARS = 2000


def truncate(text: str, limit: int, ellipsis: str = "...") -> str:
    """`text` if it has at most `limit` characters, else its start and `ellipsis`, `limit` in all."""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - len(ellipsis))] + ellipsis
