# Phones home: TCP to a listener on the host's loopback, then UDP to the same port.
import socket

with socket.create_connection(("127.0.0.1", int("${port}")), timeout=2) as conn:
    conn.sendall(b"exfiltrated")
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.sendto(b"exfiltrated", ("127.0.0.1", int("${port}")))


def check(candidate):
    pass


check(len)
