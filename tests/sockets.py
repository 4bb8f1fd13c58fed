"""Raw-socket helpers: the server-abuse tests of both servers (Daphne and the gateway's uvicorn), and a hung Redis."""

import socket
import threading


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


def closed_port():
    """Return a loopback port nothing listens on (connections to it are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SilentServer:
    """A loopback server that accepts connections and reads them but never answers: a hung Redis.

    With `forward_to` (host, port) it relays connections there instead while `hang` is False, so a test
    can make a real server hang and come back. Use it as a context manager; `url` is a redis:// URL.
    """

    def __init__(self, forward_to=None):
        self.forward_to = forward_to
        self.hang = True
        self.accepted = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._open = []
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stopped.set()
        self._thread.join(2)
        for sock in list(self._open):
            sock.close()
        self._listener.close()

    def _accept(self):
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            self._open.append(client)
            if self.hang or self.forward_to is None:
                threading.Thread(target=self._swallow, args=(client,), daemon=True).start()
            else:
                upstream = socket.create_connection(self.forward_to, timeout=5)
                upstream.settimeout(None)
                self._open.append(upstream)
                for source, sink in ((client, upstream), (upstream, client)):
                    threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _swallow(self, sock):
        try:
            while not self._stopped.is_set() and sock.recv(65536):
                pass
        except OSError:
            pass

    def _pipe(self, source, sink):
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            sink.close()
