"""Typed errors that carry what a person needs to fix the problem.

Every error names the file (when there is one), the field, what was expected and
what was found, and how to fix it. The CLI turns them into one readable message
and an exit code; only `--debug` shows a traceback.
"""

from __future__ import annotations


class SecuremlError(Exception):
    """Base class of every error we expect a user to see."""

    exit_code = 1

    def __init__(
        self,
        problem: str,
        *,
        fix: str = "",
        file: str | None = None,
        field: str | None = None,
        expected: str | None = None,
        found: str | None = None,
    ) -> None:
        self.problem = problem
        self.fix = fix
        self.file = file
        self.field = field
        self.expected = expected
        self.found = found
        super().__init__(self.message())

    def message(self) -> str:
        where = ""
        if self.file:
            where = f"{self.file}: "
        if self.field:
            where += f"field '{self.field}': "
        lines = [where + self.problem]
        if self.expected is not None:
            lines.append(f"  expected: {self.expected}")
        if self.found is not None:
            lines.append(f"  found:    {self.found}")
        if self.fix:
            lines.append(f"  fix:      {self.fix}")
        return "\n".join(lines)

    def _render_traceback_(self) -> list[str]:
        """How IPython and Jupyter show this error: the message, as the CLI prints it, without
        a traceback (SECUREML_DEBUG=1 shows one). The message may quote trainee text, so
        control characters (ANSI colours, terminal commands) are dropped."""
        import os
        import re
        import traceback

        if os.environ.get("SECUREML_DEBUG") == "1":
            return "".join(traceback.format_exception(self)).splitlines()
        text = re.sub(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", "", self.message())
        return [f"error: {text}", "(set SECUREML_DEBUG=1 to see the traceback)"]


class ConfigError(SecuremlError):
    """A scenario or overrides file is malformed or fails validation."""

    exit_code = 2


class ConfigErrors(ConfigError):
    """Several validation problems in one file, reported together so one edit fixes them all."""

    def __init__(self, problems: list[ConfigError]) -> None:
        self.problems = problems
        super().__init__(f"{len(problems)} problem(s)", file=problems[0].file if problems else None)

    def message(self) -> str:
        return "\n".join(problem.message() for problem in self.problems)


class DatasetError(SecuremlError):
    """A dataset is missing, corrupted or of the wrong shape."""

    exit_code = 3


class MitigationError(SecuremlError):
    """A trainee's mitigation file cannot be loaded, crashed, or returned something invalid."""

    exit_code = 4

    def __init__(self, problem: str, *, status: str = "error", **kwargs) -> None:
        # status is one of the gradebook statuses: error, invalid-result, no-result, ...
        self.status = status
        super().__init__(problem, **kwargs)


class VerifyDrift(SecuremlError):
    """`secureml verify` found metrics outside their tolerance."""

    exit_code = 5
