"""Phone home: connect to the grader's loopback and to an outside address."""

import socket

import numpy as np

PARAMS = {}


def sanitize(x, y, tools):
    reached = []
    for host, port in [("127.0.0.1", PARAMS["loopback_port"]), ("1.1.1.1", 53), ("8.8.8.8", 443)]:
        try:
            with socket.create_connection((host, port), timeout=2):
                reached.append(f"{host}:{port}")
        except OSError:
            pass
    try:
        socket.getaddrinfo("example.com", 80)
        reached.append("dns")
    except OSError:
        pass
    if reached:
        raise RuntimeError(f"NETWORK REACHED: {reached}")
    return np.arange(len(y))
