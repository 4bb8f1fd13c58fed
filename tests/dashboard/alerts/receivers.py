"""A webhook receiver on loopback for the delivery tests: it answers scripted statuses and keeps what came."""

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    path: str
    headers: dict
    body: bytes


class Receiver:
    """`with Receiver(500, 200) as hook:` answers 500, then 200 (the last status repeats); `hook.received` lists
    the requests, `hook.url` is its address, `hook.reply` the body it answers with (bytes, or a function of the
    Received request returning bytes, e.g. to echo its path)."""

    def __init__(self, *statuses, reply=b'{"ok": true}', headers=None):
        self.statuses = list(statuses) or [200]
        self.reply = reply
        self.headers = headers or {}  # extra response headers, e.g. a redirect's Location
        self.received = []
        self._server = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self._server.server_port}"

    def __enter__(self):
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                got = Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                receiver.received.append(got)
                status = receiver.statuses.pop(0) if len(receiver.statuses) > 1 else receiver.statuses[0]
                reply = receiver.reply(got) if callable(receiver.reply) else receiver.reply
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                for name, value in receiver.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()
