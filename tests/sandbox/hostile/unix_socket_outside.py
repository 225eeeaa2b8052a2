# Connects to a pathname UNIX socket the host listens on, outside the working directory.
import socket

client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
client.connect("$unix_socket")
client.sendall(b"reached the host")


def check(candidate):
    pass


check(len)
