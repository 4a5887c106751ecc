"""Loading a trainee's mitigation file, and the strict result format it sends back.

A mitigation returns raw outputs only (kept indices, weights, arrays). They travel as one
safetensors blob: an 8-byte little-endian header length, a JSON header, raw tensor bytes.
That format cannot carry code, so nothing a trainee sends is ever unpickled. The parent
re-parses the blob strictly: bounded size, JSON without NaN/Infinity, finite floats only.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys
import traceback
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from secureml.errors import MitigationError

if TYPE_CHECKING:
    import numpy as np

RESULT_FORMAT = "secureml-result/1"
MAX_HEADER_BYTES = 1 << 20
MAX_ERROR_CHARS = 2000
MAX_CONFIG_CHARS = 64 * 1024


@dataclass(frozen=True)
class RawResult:
    """What a mitigation sent back, parsed but not yet checked against the scenario.

    arrays: named numeric tensors (kept indices, weights, outputs).
    config: a small JSON object for declarative answers (e.g. a chosen preprocessing).
    """

    arrays: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)


def load_module(path: Path, function_name: str) -> types.ModuleType:
    """Import a trainee's file as a fresh module and check it defines `function_name`."""
    path = Path(path)
    if not path.is_file():
        raise MitigationError(
            "mitigation file not found",
            file=str(path),
            fix="check the path; start from the lab's starter with `secureml show ID`",
        )
    module_name = f"secureml_mitigation_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise MitigationError("cannot import the file as Python", file=str(path))
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as error:
        raise MitigationError(
            f"syntax error at line {error.lineno}: {error.msg}",
            file=str(path),
            fix="fix the line above; run `python -m py_compile FILE` to check",
        ) from error
    except BaseException as error:  # trainee code may raise anything, even SystemExit
        raise MitigationError(
            f"importing the file raised {describe_exception(error, path)}",
            file=str(path),
            fix="move work into the function; importing the file should only define things",
        ) from error
    function = getattr(module, function_name, None)
    if not callable(function):
        raise MitigationError(
            f"the file does not define a function '{function_name}'",
            file=str(path),
            expected=f"def {function_name}(...) at the top level",
            found=", ".join(name for name in vars(module) if not name.startswith("_")) or "nothing",
            fix=f"define {function_name}; the lab's starter file shows its signature",
        )
    return module


@dataclass(frozen=True)
class LoadedMitigation:
    """A trainee's mitigation, from a file or a function object, ready to run.

    source: the file the trainee's code lives in (for "line 12" in error messages).
    label: what results.json records as the mitigation.
    """

    module: types.ModuleType
    source: Path
    label: str


def load_mitigation(mitigation: Any, function_name: str) -> LoadedMitigation:
    """A file path (as `secureml run --mitigation`) or a function object (a notebook cell's
    `def sanitize(...)`), checked the same way: it must be the family's function."""
    if isinstance(mitigation, (str, os.PathLike)):
        return LoadedMitigation(load_module(Path(mitigation), function_name), Path(mitigation), str(mitigation))
    if not callable(mitigation):
        raise MitigationError(
            "the mitigation is neither a function nor a file",
            expected=f"your {function_name} function, the path of a mitigation file, or None",
            found=f"a {type(mitigation).__name__}",
            fix=f"define `def {function_name}(...)` in a cell and pass it: run_lab(ID, {function_name})",
        )
    name = getattr(mitigation, "__name__", type(mitigation).__name__)
    if name != function_name:
        raise MitigationError(
            f"the function is named '{name}', and this scenario calls '{function_name}'",
            expected=f"def {function_name}(...)",
            found=name,
            fix=f"rename it to {function_name}; the lab's starter shows its signature",
        )
    module = types.ModuleType(f"secureml_mitigation_{function_name}")
    setattr(module, function_name, mitigation)
    code = getattr(mitigation, "__code__", None)
    source = Path(code.co_filename) if code is not None else Path(f"<{name}>")
    return LoadedMitigation(module, source, f"function {name} ({source})")


def describe_exception(error: BaseException, path: Path | None = None) -> str:
    """`ValueError: msg (mitigation.py, line 12)`: the innermost frame in the trainee's file."""
    line = ""
    if path is not None:
        frames = [
            frame
            for frame in traceback.extract_tb(error.__traceback__)
            if Path(frame.filename).resolve() == Path(path).resolve()
        ]
        if frames:
            line = f" ({Path(path).name}, line {frames[-1].lineno})"
    text = f"{type(error).__name__}: {error}{line}"
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


# --------------------------------------------------------------------------- result format


def encode_result(result: RawResult | None = None, *, status: str = "ok", error: str = "") -> bytes:
    import numpy as np
    from safetensors.numpy import save

    result = result or RawResult({})
    metadata = {
        "format": RESULT_FORMAT,
        "status": status,
        "error": error[:MAX_ERROR_CHARS],
        "config": json.dumps(result.config, allow_nan=False),
    }
    arrays = {name: np.ascontiguousarray(value) for name, value in result.arrays.items()}
    return save(arrays, metadata)


def decode_result(blob: bytes | None, *, max_bytes: int) -> RawResult:
    """Parse a child's result strictly; raise MitigationError with the gradebook status."""
    if not blob:
        raise MitigationError(
            "the mitigation ended without returning a result",
            status="no-result",
            fix="return from your function instead of exiting the process",
        )
    if len(blob) > max_bytes:
        raise MitigationError(
            f"the result is {len(blob)} bytes, more than the {max_bytes} allowed",
            status="invalid-result",
        )
    header = _parse_header(blob)
    metadata = header.get("__metadata__") or {}
    if metadata.get("format") != RESULT_FORMAT:
        raise MitigationError("the result is not in secureml's format", status="invalid-result")
    if metadata.get("status") == "error":
        raise MitigationError(str(metadata.get("error") or "the mitigation failed"), status="error")
    if metadata.get("status") != "ok":
        raise MitigationError("the result has an unknown status", status="invalid-result")
    from safetensors.numpy import load

    try:
        arrays = load(blob)
    except Exception as error:
        raise MitigationError(f"the result's tensors are malformed ({error})", status="invalid-result") from error
    for name, array in arrays.items():
        if array.dtype.kind == "f" and not bool(_all_finite(array)):
            raise MitigationError(
                f"output '{name}' contains NaN or infinite values", status="invalid-result"
            )
    return RawResult(arrays, _parse_config(metadata.get("config", "{}")))


def _parse_config(text: Any) -> dict[str, Any]:
    if not isinstance(text, str) or len(text) > MAX_CONFIG_CHARS:
        raise MitigationError("the result's config is missing or too large", status="invalid-result")
    try:
        config = json.loads(text, parse_constant=_reject_constant)
    except ValueError as error:
        raise MitigationError(f"the result's config is not strict JSON ({error})", status="invalid-result") from error
    if not isinstance(config, dict) or not _json_finite(config):
        raise MitigationError("the result's config must be a JSON object of finite values", status="invalid-result")
    return config


def _reject_constant(name: str):
    raise ValueError(f"non-finite number {name}")


def _parse_header(blob: bytes) -> dict[str, Any]:
    if len(blob) < 8:
        raise MitigationError("the result is truncated", status="invalid-result")
    length = int.from_bytes(blob[:8], "little")
    if length > MAX_HEADER_BYTES or 8 + length > len(blob):
        raise MitigationError("the result header is malformed", status="invalid-result")

    try:
        header = json.loads(blob[8 : 8 + length], parse_constant=_reject_constant)
    except ValueError as error:
        raise MitigationError(f"the result header is not strict JSON ({error})", status="invalid-result") from error
    if not isinstance(header, dict):
        raise MitigationError("the result header is malformed", status="invalid-result")
    # json turns 1e999 into inf without calling parse_constant (ART-FACTS sandbox fact 7).
    if not _json_finite(header):
        raise MitigationError("the result header holds a non-finite number", status="invalid-result")
    return header


def _json_finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_json_finite(item) for item in value.values())
    if isinstance(value, list):
        return all(_json_finite(item) for item in value)
    return True


def _all_finite(array) -> bool:
    import numpy as np

    return bool(np.isfinite(array).all())


# --------------------------------------------------------------------------- running


def call_and_encode(family: Any, module: types.ModuleType, mitigation: Path, folder: Path) -> bytes:
    """Call the trainee's function through the family and encode what it returned.

    An exception becomes an error result naming the trainee's line; exiting instead of
    returning (SystemExit) gives no result at all, exactly as when the process dies.
    """
    try:
        return encode_result(family.run_mitigation(module, folder))
    except SystemExit:
        return b""
    except KeyboardInterrupt:
        raise
    except BaseException as error:  # trainee code may raise anything
        problem = f"{family.function_name} raised {describe_exception(error, mitigation)}"
        return encode_result(status="error", error=problem)


def run_in_child(family: Any, mitigation: Path, folder: Path) -> bytes:
    """What the (sandboxed) child process does: load, call, encode."""
    try:
        module = load_module(mitigation, family.function_name)
    except MitigationError as error:
        return encode_result(status="error", error=error.message())
    return call_and_encode(family, module, mitigation, folder)


def run_in_process(
    family: Any, module: types.ModuleType, mitigation: Path, folder: Path, *, max_bytes: int = 1 << 30
) -> RawResult:
    """Run an already loaded mitigation in this process (a trainee's own `secureml run`).

    The result goes through the same encode/decode as in grading, so what passes here
    passes the grader's checks too. Not isolated: only for the trainee's own code.
    """
    saved_argv = list(sys.argv)
    try:
        blob = call_and_encode(family, module, mitigation, folder)
    finally:
        sys.argv[:] = saved_argv
    try:
        return decode_result(blob, max_bytes=max_bytes)
    except MitigationError as error:
        raise MitigationError(
            error.problem,
            status=error.status,
            file=str(mitigation),
            fix=error.fix or "see the message above; the lab's README shows what the function returns",
        ) from error


# --------------------------------------------------------------------------- returned models


def weights_result(model: Any, *, function: str, how_to_build: str) -> RawResult:
    """In the child: only the weights of the model a trainee's function returned."""
    from torch import nn

    from secureml import models

    if not isinstance(model, nn.Module):
        raise TypeError(f"{function} must return a torch model ({how_to_build} makes one), got {type(model).__name__}")
    return RawResult(models.model_arrays(model))


def model_from_weights(raw: RawResult, *, arch: str, input_shape, num_classes: int):
    """In the parent: a fresh model of the victim's architecture holding the returned float32
    weights, or an `invalid-result` MitigationError that says what did not fit."""
    from secureml import models

    if raw.config:
        raise MitigationError("expected only the model's weights, got a config as well", status="invalid-result")
    for name, array in raw.arrays.items():
        if array.dtype.name != "float32":
            raise MitigationError(
                f"weight '{name}' is {array.dtype}; the victim's weights are float32", status="invalid-result"
            )
    model = models.build(arch, input_shape, num_classes, 0)
    try:
        models.load_arrays(model, raw.arrays)
    except ValueError as error:
        raise MitigationError(
            f"the returned model is not the victim's architecture '{arch}': {error}", status="invalid-result"
        ) from error
    return model.eval()
