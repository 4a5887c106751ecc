"""Touch memory page by page, up to 8 GiB: the memory cgroup must stop it first."""


def sanitize(x, y, tools):
    chunks = []
    for _ in range(128):
        chunks.append(bytearray(64 * 1024 * 1024))
        chunks[-1][::4096] = b"x" * len(chunks[-1][::4096])
    return chunks
