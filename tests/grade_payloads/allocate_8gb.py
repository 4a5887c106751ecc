def sanitize(x, y, tools):
    hoard = bytearray(8 * 1024**3)
    return hoard
