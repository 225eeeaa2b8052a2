# Burns CPU forever: must end at the CPU or wall-clock limit.
def add(a, b):
    while True:
        pass


def check(candidate):
    assert candidate(1, 2) == 3


check(add)
