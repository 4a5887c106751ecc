"""Send a valid result, then exit with status 152: what bwrap reports for death by SIGXCPU.
The supervisor measured no CPU limit, so the result stands."""

import os

import numpy as np

from secureml.mitigation import RawResult, encode_result

PARAMS = {}


def sanitize(x, y, tools):
    blob = encode_result(RawResult({"kept_indices": np.arange(len(y))}))
    fd = int(os.environ["SECUREML_RESULT_FD"])
    os.write(fd, blob)
    os.close(fd)
    os._exit(152)
