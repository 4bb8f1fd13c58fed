"""Raw-socket helpers for the server-abuse tests of both servers (Daphne and the gateway's uvicorn)."""

import socket


def connect(port, send_buffer=None):
    """Open a loopback connection to `port` (optionally with a small send buffer, so refusals show early)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    if send_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
    return sock


def response(sock):
    """Return everything the server sends until it closes (or resets) the connection."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return data


def send_until_refused(sock, head, total, chunk=b"x" * 65536):
    """Send `head`, then body bytes until `total` or the server stops taking them; return the bytes sent."""
    sock.sendall(head)
    sent = 0
    try:
        while sent < total:
            sent += sock.send(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass
    return sent
