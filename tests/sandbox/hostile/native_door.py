# Reaches for native code (ctypes) to get around everything else, then calls fork through libc.
import ctypes

libc = ctypes.CDLL(None)
assert libc.fork() >= 0


def check(candidate):
    pass


check(len)
