# A wrong answer that ends the process with status 0 before the asserts, past every handler.
import os


def add(a, b):
    os._exit(0)


def check(candidate):
    assert candidate(1, 2) == 3


check(add)
