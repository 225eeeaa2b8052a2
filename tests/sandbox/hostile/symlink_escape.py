# Reaches outside through a symbolic link made inside its own directory: reads the secret, then
# overwrites the canary.
import os

os.symlink("${secret}", "secret-link")
with open("secret-link") as handle:
    print(handle.read())
os.symlink("${canary}", "canary-link")
with open("canary-link", "w") as out:
    out.write("owned")


def check(candidate):
    pass


check(len)
