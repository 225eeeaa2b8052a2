# Phones home: TCP to a listener on the host's loopback, UDP to the same port, TCP to the world.
import socket

with socket.create_connection(("127.0.0.1", ${port}), timeout=2) as conn:
    conn.sendall(b"exfiltrated")
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.sendto(b"exfiltrated", ("127.0.0.1", ${port}))
socket.create_connection(("1.1.1.1", 53), timeout=2)


def check(candidate):
    pass


check(len)
