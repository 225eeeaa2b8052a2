# Uses no CPU at all, so only the wall clock can end it.
import time


def add(a, b):
    time.sleep(10_000)


def check(candidate):
    assert candidate(1, 2) == 3


check(add)
