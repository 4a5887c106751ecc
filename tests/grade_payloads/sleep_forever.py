import time

PARAMS = {}


def sanitize(x, y, tools):
    if "marker" in PARAMS:
        with open("/proc/self/comm", "w") as comm:  # a name the test can look for
            comm.write(PARAMS["marker"])
    time.sleep(3600)
