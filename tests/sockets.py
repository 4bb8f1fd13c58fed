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


class Relay:
    """A loopback TCP relay to a real server that a test can take down and bring back: a database outage
    without stopping the server other tests share.

    `down()` closes every relayed connection and stops listening (new connections are refused, as by a
    stopped server); `up()` listens on the same port again. Use it as a context manager; `port` is fixed.
    """

    def __init__(self, target):
        self.target = target
        self._listener = self._listen(0)
        self.port = self._listener.getsockname()[1]
        self._open = set()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = None

    def __enter__(self):
        self.up()
        return self

    def __exit__(self, *exc):
        self._stopped.set()
        self.down()

    def _listen(self, port):
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(64)
        listener.settimeout(0.1)
        return listener

    def up(self):
        if self._listener is None:
            self._listener = self._listen(self.port)
        self._thread = threading.Thread(target=self._accept, args=(self._listener,), daemon=True)
        self._thread.start()

    def down(self):
        listener, self._listener = self._listener, None
        if self._thread is not None:
            self._thread.join(2)
            self._thread = None
        if listener is not None:
            listener.close()
        with self._lock:
            for sock in self._open:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
            self._open.clear()

    def _accept(self, listener):
        while self._listener is listener and not self._stopped.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            client.settimeout(None)
            with self._lock:
                self._open.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source, sink):
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            try:
                sink.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
