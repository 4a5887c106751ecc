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
from typing import Any

from secureml.errors import MitigationError
from secureml.text import MAX_ERROR_CHARS, truncate

RESULT_FORMAT = "secureml-result/1"
MAX_HEADER_BYTES = 1 << 20
MAX_CONFIG_CHARS = 64 * 1024


# What the grader can pass a trainee's function, by parameter name: the training set it
# hands over ("x", "y"), the deployed victim ("model"), and the family's tools.
TRAINEE_PARAMETERS = ("x", "y", "model", "tools")
# What every family's `tools` offers (secureml.families.base.Tools); a family adds its own.
SHARED_TOOLS_HELP = (
    "  every lab's tools: tools.build() a fresh model of the victim's architecture, tools.victim() a\n"
    "    copy of the deployed victim, tools.train(x, y) a model trained like the victim,\n"
    "    tools.optimizer(model) the victim's optimiser; its recipe: tools.epochs, tools.batch_size,\n"
    "    tools.learning_rate, tools.weight_decay, tools.optimizer_name; tools.predict(model, x),\n"
    "    tools.accuracy(model, x, y), tools.num_classes, tools.class_names, tools.input_shape, tools.seed"
)


@dataclass(frozen=True)
class TraineeCall:
    """The one function a lab's trainee writes, declared once, on the family's scenario schema.

    The grader calls `name(*parameters)` (see `secureml.families.base.Family`), and `secureml
    show` prints `describe()`. parameters: names from TRAINEE_PARAMETERS, in order.
    returns: what the function must return; help: the lines shown under the signature.
    """

    name: str
    parameters: tuple[str, ...]
    returns: str
    help: str = ""

    def __post_init__(self) -> None:
        unknown = [name for name in self.parameters if name not in TRAINEE_PARAMETERS]
        if unknown:
            raise ValueError(f"unknown trainee parameters {unknown}; the grader passes {TRAINEE_PARAMETERS}")

    @property
    def signature(self) -> str:
        return f"def {self.name}({', '.join(self.parameters)}) -> {self.returns}"

    def describe(self) -> str:
        shared = SHARED_TOOLS_HELP if "tools" in self.parameters else ""
        return "\n".join(filter(None, [self.signature, self.help, shared]))


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
    # Cut the message, keep the location.
    message = truncate(str(error), MAX_ERROR_CHARS - len(type(error).__name__) - len(line) - 2)
    return f"{type(error).__name__}: {message}{line}"


# --------------------------------------------------------------------------- result format


def encode_result(result: RawResult | None = None, *, status: str = "ok", error: str = "") -> bytes:
    import numpy as np
    from safetensors.numpy import save

    result = result or RawResult({})
    metadata = {
        "format": RESULT_FORMAT,
        "status": status,
        "error": truncate(error, MAX_ERROR_CHARS),
        "config": json.dumps(result.config, allow_nan=False),
    }
    arrays = {name: np.ascontiguousarray(value) for name, value in result.arrays.items()}
    return save(arrays, metadata)


def decode_result(blob: bytes | None, *, max_bytes: int) -> RawResult:
    """Parse a child's result strictly; raise MitigationError with the gradebook status.

    Whatever the bytes hold (random noise, wrong types, deep nesting, tensors that claim
    more data than there is), the outcome is a RawResult or a MitigationError: "no-result"
    for nothing at all, "error" for a well-formed error report, else "invalid-result". The
    trainee, not the grader, sent malformed bytes.
    """
    if blob is None or (isinstance(blob, (bytes, bytearray, memoryview)) and len(blob) == 0):
        raise MitigationError(
            "the mitigation ended without returning a result",
            status="no-result",
            fix="return from your function instead of exiting the process",
        )
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise _invalid(f"the result is {type(blob).__name__}, not bytes")
    blob = bytes(blob)
    if len(blob) > max_bytes:
        raise _invalid(f"the result is {len(blob)} bytes, more than the {max_bytes} allowed")
    header, data_bytes = _parse_header(blob)
    metadata = _parse_metadata(header.pop("__metadata__", None))
    if metadata.get("format") != RESULT_FORMAT:
        raise _invalid("the result is not in secureml's format")
    if metadata.get("status") == "error":
        raise MitigationError(truncate(metadata.get("error", ""), MAX_ERROR_CHARS) or "the mitigation failed",
                              status="error")
    if metadata.get("status") != "ok":
        raise _invalid("the result has an unknown status")
    for name, entry in header.items():
        _check_tensor_entry(name, entry, data_bytes)
    from safetensors.numpy import load

    try:
        arrays = load(blob)
    except Exception as error:  # the library's own checks (overlaps, gaps, dtypes)
        raise _invalid(f"the result's tensors are malformed ({str(error)[:200]})") from error
    for name, array in arrays.items():
        if array.dtype.kind == "f" and not bool(_all_finite(array)):
            raise _invalid(f"output '{name}' contains NaN or infinite values")
    return RawResult(arrays, _parse_config(metadata.get("config", "{}")))


def _invalid(problem: str) -> MitigationError:
    return MitigationError(problem, status="invalid-result")


# safetensors dtypes that numpy can hold, and their sizes in bytes.
_TENSOR_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "U16": 2, "I16": 2, "F16": 2, "U32": 4,
                       "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8}
_MAX_TENSOR_DIMS = 32  # numpy 1.x's limit; numpy 2 allows 64


def _check_tensor_entry(name: str, entry: Any, data_bytes: int) -> None:
    """One tensor's header entry: the right keys and types, and a size that adds up."""
    if not name or not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise _invalid(f"the result's header entry '{name[:80]}' is not a tensor description")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in _TENSOR_DTYPE_BYTES:
        raise _invalid(f"output '{name[:80]}' has an unsupported dtype")
    if (not isinstance(shape, list) or len(shape) > _MAX_TENSOR_DIMS
            or not all(_is_count(size) for size in shape)):
        raise _invalid(f"output '{name[:80]}' has a malformed shape")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(o) for o in offsets):
        raise _invalid(f"output '{name[:80]}' has malformed data offsets")
    begin, end = offsets
    if not begin <= end <= data_bytes:
        raise _invalid(f"output '{name[:80]}' claims bytes beyond the end of the result")
    elements = math.prod(shape)
    if elements * _TENSOR_DTYPE_BYTES[dtype] != end - begin:
        raise _invalid(f"output '{name[:80]}' claims {elements} elements but holds {end - begin} bytes")


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _parse_metadata(metadata: Any) -> dict[str, str]:
    if not isinstance(metadata, dict) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in metadata.items()
    ):
        raise _invalid("the result's metadata must be an object of strings")
    return metadata


def _parse_config(text: Any) -> dict[str, Any]:
    if not isinstance(text, str) or len(text) > MAX_CONFIG_CHARS:
        raise _invalid("the result's config is missing or too large")
    config = _strict_json(text, "the result's config")
    if not isinstance(config, dict) or not _json_finite(config):
        raise _invalid("the result's config must be a JSON object of finite values")
    return config


def _reject_constant(name: str):
    raise ValueError(f"non-finite number {name}")


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two entries of one name could be read differently by us and by safetensors.
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("a key appears twice")
    return dict(pairs)


def _strict_json(text: str | bytes, what: str) -> Any:
    """JSON without NaN/Infinity or duplicate keys; deep nesting is malformed, not a crash."""
    try:
        return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_reject_duplicates)
    except RecursionError as error:
        raise _invalid(f"{what} is nested too deeply") from error
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise _invalid(f"{what} is not strict JSON ({str(error)[:200]})") from error


def _parse_header(blob: bytes) -> tuple[dict[str, Any], int]:
    """The result's JSON header, and how many data bytes follow it."""
    if len(blob) < 8:
        raise _invalid("the result is truncated")
    length = int.from_bytes(blob[:8], "little")
    if length > MAX_HEADER_BYTES or 8 + length > len(blob):
        raise _invalid("the result header is malformed")
    header = _strict_json(blob[8 : 8 + length], "the result header")
    if not isinstance(header, dict):
        raise _invalid("the result header is malformed")
    # json turns 1e999 into inf without calling parse_constant (ART-FACTS sandbox fact 7).
    if not _json_finite(header):
        raise _invalid("the result header holds a non-finite number")
    return header, len(blob) - 8 - length


def _json_finite(value: Any) -> bool:
    """No inf or NaN anywhere in a parsed JSON value (iterative: nesting costs no stack)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return False
        if isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
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
