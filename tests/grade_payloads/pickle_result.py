"""Send a malicious pickle, in torch's own file format, as the result."""

import io
import os

import torch

PARAMS = {}


class Payload:
    def __reduce__(self):
        return (os.system, (f"touch {PARAMS['marker']}",))


def sanitize(x, y, tools):
    weights = io.BytesIO()
    torch.save({"state_dict": {"head.weight": Payload()}}, weights)
    fd = int(os.environ["SECUREML_RESULT_FD"])
    os.write(fd, weights.getvalue())
    os._exit(0)
