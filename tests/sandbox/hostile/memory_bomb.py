# Allocates far past the address-space limit, all at once and then step by step.
hoard = []
try:
    hoard.append(bytearray(10**11))
except MemoryError:
    pass
while True:
    hoard.append(bytearray(10**8))


def check(candidate):
    pass


check(len)
