# Lists the user's home and reads a secret kept outside its directory, printing both.
import os

print(os.listdir("${home}"))
with open("${secret}") as handle:
    print(handle.read())


def check(candidate):
    pass


check(len)
