# Hard-links the secret and the canary into its own directory, then reads and overwrites them.
import os

os.link("${secret}", "secret-copy")
with open("secret-copy") as handle:
    print(handle.read())
os.link("${canary}", "canary-copy")
with open("canary-copy", "w") as out:
    out.write("owned")


def check(candidate):
    pass


check(len)
