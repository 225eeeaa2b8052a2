# Starts processes through multiprocessing, which forks (or spawns) under the hood.
import multiprocessing


def spin():
    while True:
        pass


procs = [multiprocessing.Process(target=spin) for _ in range(64)]
for proc in procs:
    proc.start()


def check(candidate):
    pass


check(spin)
