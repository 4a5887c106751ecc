"""Bypass the family's checks and write a hand-made result to the result channel."""

import json
import os

import numpy as np

from secureml.mitigation import RawResult, encode_result

PARAMS = {}


def sanitize(x, y, tools):
    kind = PARAMS["kind"]
    if kind == "wrong-shape":
        blob = encode_result(RawResult({"kept_indices": np.arange(len(y)).reshape(2, -1)}))
    elif kind == "nan":
        blob = encode_result(RawResult({"kept_indices": np.array([0.0, np.nan, 2.0])}))
    elif kind == "huge-number":
        # json turns 1e999 into inf without complaint (ART-FACTS sandbox fact 7).
        header = json.dumps({"__metadata__": {"format": "secureml-result/1", "status": "ok",
                                              "error": "", "config": "{}"}, "x": 1}).replace("1}", "1e999}")
        blob = len(header).to_bytes(8, "little") + header.encode()
    elif kind == "extra-output":
        blob = encode_result(RawResult({"kept_indices": np.arange(len(y)), "score": np.array([100.0])}))
    elif kind == "garbage":
        blob = b"\xff" * 64
    elif kind == "string-metadata":
        header = json.dumps({"__metadata__": "format=secureml-result/1"}).encode()
        blob = len(header).to_bytes(8, "little") + header
    elif kind == "deep-nesting":
        # 100k nested arrays: under the 1 MiB header cap, far over the JSON parser's stack.
        header = b"[" * 100_000 + b"]" * 100_000
        blob = len(header).to_bytes(8, "little") + header
    elif kind == "huge-claim":
        header = json.dumps({"__metadata__": {"format": "secureml-result/1", "status": "ok", "error": "",
                                              "config": "{}"},
                             "kept_indices": {"dtype": "I64", "shape": [2**40], "data_offsets": [0, 8]}}).encode()
        blob = len(header).to_bytes(8, "little") + header + bytes(8)
    else:
        raise ValueError(kind)
    os.write(int(os.environ["SECUREML_RESULT_FD"]), blob)
    os._exit(0)
