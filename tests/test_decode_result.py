"""The grader's parser of what a sandboxed submission sends back, fuzzed.

Whatever arrives on the result channel is the trainee's doing: random bytes, headers of the
wrong types, JSON nested 100k deep, tensors that claim more data than there is. None of it
may crash the grader (which would record `infra-error`, exit 8, and grade it again on every
re-run): the only outcomes are a RawResult, or a MitigationError whose status is
"invalid-result" ("no-result" for nothing at all, "error" for a well-formed error report).
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secureml.errors import MitigationError
from secureml.mitigation import RESULT_FORMAT, RawResult, decode_result, encode_result

MAX_BYTES = 1 << 20
OK_METADATA = {"format": RESULT_FORMAT, "status": "ok", "error": "", "config": "{}"}
# No example database: nothing is written into the repository, and every run is fresh.
FUZZ = settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)


def outcome(blob) -> str:
    """"ok", or the MitigationError's status. Anything else raised fails the test."""
    try:
        result = decode_result(blob, max_bytes=MAX_BYTES)
    except MitigationError as error:
        return error.status
    assert isinstance(result, RawResult)
    return "ok"


def framed(header: object, data: bytes = b"", *, raw: bytes | None = None) -> bytes:
    text = raw if raw is not None else json.dumps(header, allow_nan=True).encode()
    return struct.pack("<Q", len(text)) + text + data


@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes_are_invalid_result_never_a_crash(blob):
    assert outcome(blob) == ("no-result" if not blob else "invalid-result")


@FUZZ
@given(json_values)
def test_any_json_value_as_the_header_is_invalid_result(header):
    assert outcome(framed(header)) == "invalid-result"


@FUZZ
@given(json_values)
def test_any_json_value_as_the_metadata_is_rejected_unless_it_is_well_formed(metadata):
    assert outcome(framed({"__metadata__": metadata})) == "invalid-result"


@FUZZ
@given(st.dictionaries(st.sampled_from(["dtype", "shape", "data_offsets", "other"]), json_values, max_size=4),
       st.binary(max_size=64))
def test_any_tensor_description_is_checked_before_it_is_read(entry, data):
    assert outcome(framed({"__metadata__": OK_METADATA, "kept_indices": entry}, data)) in ("invalid-result", "ok")


@FUZZ
@given(st.sampled_from(["I64", "F32", "U8", "BOOL", "F64"]),
       st.lists(st.integers(min_value=0, max_value=2**64), max_size=6),
       st.integers(min_value=0, max_value=2**64), st.integers(min_value=0, max_value=2**64),
       st.binary(max_size=64))
def test_tensors_that_claim_more_than_they_hold_are_invalid_result(dtype, shape, begin, end, data):
    entry = {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}
    assert outcome(framed({"__metadata__": OK_METADATA, "kept_indices": entry}, data)) in ("invalid-result", "ok")


@FUZZ
@given(st.integers(min_value=0, max_value=len(encode_result(RawResult({"k": np.arange(8)}))) - 1),
       st.integers(min_value=0, max_value=255))
def test_a_valid_result_with_one_byte_changed_is_ok_or_invalid_result(position, value):
    blob = bytearray(encode_result(RawResult({"k": np.arange(8)})))
    blob[position] = value
    assert outcome(bytes(blob)) in ("ok", "invalid-result")


@FUZZ
@given(st.integers(min_value=0, max_value=200))
def test_a_truncated_result_is_invalid_result(cut):
    blob = encode_result(RawResult({"k": np.arange(8)}))
    assert outcome(blob[: max(1, len(blob) - 1 - cut)]) == "invalid-result"


@pytest.mark.parametrize("depth", [1_000, 100_000, 400_000])
def test_deep_nesting_under_the_size_cap_is_invalid_result(depth):
    for opening, closing in ((b"[", b"]"), (b'{"a":', b"}")):
        header = opening * depth + b"0" + closing * depth
        if len(header) < 1 << 20:
            assert outcome(framed(None, raw=header)) == "invalid-result"
    nested_metadata = b'{"__metadata__": ' + b"[" * depth + b"]" * depth + b"}"
    assert outcome(framed(None, raw=nested_metadata)) == "invalid-result"


@pytest.mark.parametrize("metadata", ["format=secureml-result/1", 7, None, [1, 2], {"format": 1}])
def test_metadata_of_the_wrong_type_is_invalid_result(metadata):
    assert outcome(framed({"__metadata__": metadata})) == "invalid-result"


@pytest.mark.parametrize("header", [
    '{"__metadata__": {"format": "secureml-result/1", "status": "ok", "error": "", "config": "{}"}, "x": 1e999}',
    '{"__metadata__": {"format": "secureml-result/1", "status": "ok", "error": "", "config": "{\\"a\\": NaN}"}}',
    '{"__metadata__": {"format": "secureml-result/1", "status": "ok", "error": "", "config": "[1]"}}',
    '{"__metadata__": {"format": "secureml-result/1", "status": "ok", "error": "", "config": "{}"}, '
    '"k": {"dtype": "I64", "shape": [1], "data_offsets": [0, 8]}, '
    '"k": {"dtype": "I64", "shape": [2], "data_offsets": [0, 16]}}',
])
def test_non_finite_numbers_bad_configs_and_duplicate_keys_are_invalid_result(header):
    assert outcome(framed(None, raw=header.encode())) == "invalid-result"


def test_nothing_is_no_result_and_an_error_report_is_error():
    assert outcome(b"") == "no-result" and outcome(None) == "no-result"
    assert outcome(encode_result(status="error", error="ValueError: boom")) == "error"
    assert outcome("not bytes") == "invalid-result"


def test_a_valid_result_round_trips():
    raw = decode_result(encode_result(RawResult({"k": np.arange(5)}, {"steps": ["jpeg"]})), max_bytes=MAX_BYTES)
    assert raw.arrays["k"].tolist() == [0, 1, 2, 3, 4] and raw.config == {"steps": ["jpeg"]}
