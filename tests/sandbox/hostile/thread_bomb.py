# Starts threads (small stacks, so the address-space limit does not stop them first) until refused:
# a thread bomb reached ~10,000 threads when the harness ran as root.
import threading

threading.stack_size(64 * 1024)
gate = threading.Event()
started = 0
try:
    for _ in range(1000):
        threading.Thread(target=gate.wait, daemon=True).start()
        started += 1
finally:
    gate.set()
assert started == 1000


def check(candidate):
    pass


check(len)
