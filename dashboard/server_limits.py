"""Request limits of the control plane's server (Daphne on Twisted), applied by `manage.py serve`.

Twisted already caps the request line plus headers (`totalHeadersSize`, 400
beyond) and closes connections idle for a minute, but it writes any request
body, however large, to a temporary file before Daphne hands it to the
application, and it waits for slowly dripping headers as long as each byte
comes within the idle timeout. Here:

- request line + headers at most SERVER_MAX_HEADER_BYTES (400 and closed);
- headers complete within SERVER_HEADER_TIMEOUT_S of the connection opening or
  going idle between requests (closed);
- a body larger than SERVER_MAX_BODY_BYTES, by its Content-Length or as it
  streams in chunked, is answered 413 and the connection closed, before
  anything is buffered.
"""

from daphne import server as daphne_server
from daphne.http_protocol import HTTPFactory, WebRequest
from django.conf import settings
from twisted.internet import reactor
from twisted.web import http


class _Discard:
    """Where the body of a refused request goes."""

    def write(self, data):
        pass

    def seek(self, *args):
        pass

    def read(self, *args):
        return b""

    def close(self):
        pass

    closed = True


class LimitedWebRequest(WebRequest):
    """Daphne's request, refusing a body over SERVER_MAX_BODY_BYTES before it is written anywhere."""

    received = 0
    refused = False

    def gotLength(self, length):
        if length is not None and length > settings.SERVER_MAX_BODY_BYTES:
            self.requestHeaders.removeHeader(b"Expect")  # no "100 Continue" for a body we refuse
            self._refuse()
            return
        super().gotLength(length)

    def handleContentChunk(self, data):
        if self.refused:
            return
        self.received += len(data)
        if self.received > settings.SERVER_MAX_BODY_BYTES:
            self.content.close()
            self._refuse()
            return
        super().handleContentChunk(data)

    def requestReceived(self, command, path, version):
        if not self.refused:
            super().requestReceived(command, path, version)

    def _refuse(self):
        self.refused = True
        self.content = _Discard()
        message = b"Request body is larger than %d bytes." % settings.SERVER_MAX_BODY_BYTES
        head = (b"HTTP/1.1 413 Payload Too Large\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n"
                b"connection: close\r\n\r\n")
        self.channel.transport.write(head % len(message) + message)
        self.channel.transport.loseConnection()


class LimitedHTTPChannel(http.HTTPChannel):
    """Twisted's HTTP/1.1 channel with our header size and a deadline for complete headers."""

    header_deadline = None

    def connectionMade(self):
        self.totalHeadersSize = settings.SERVER_MAX_HEADER_BYTES
        super().connectionMade()
        self._arm()

    def allHeadersReceived(self):
        self._disarm()
        super().allHeadersReceived()

    def requestDone(self, request):
        super().requestDone(request)
        if self.persistent and self.transport is not None and self.transport.connected:
            self._arm()

    def connectionLost(self, reason):
        self._disarm()
        super().connectionLost(reason)

    def _arm(self):
        self._disarm()
        self.header_deadline = reactor.callLater(settings.SERVER_HEADER_TIMEOUT_S, self._headers_too_slow)

    def _disarm(self):
        if self.header_deadline is not None and self.header_deadline.active():
            self.header_deadline.cancel()
        self.header_deadline = None

    def _headers_too_slow(self):
        self.header_deadline = None
        if self.transport is not None and getattr(self.transport, "protocol", self) is self:  # not a WebSocket now
            self.transport.abortConnection()


class LimitedHTTPFactory(HTTPFactory):
    protocol = LimitedHTTPChannel  # plain HTTP/1.1: TLS and HTTP/2 belong to the reverse proxy in front

    def buildProtocol(self, addr):
        channel = super().buildProtocol(addr)
        channel.requestFactory = LimitedWebRequest
        return channel


class LimitedServer(daphne_server.Server):
    """Daphne's server on LimitedHTTPFactory."""

    def run(self):
        # Server.run builds its factory from this module-level name; nothing else in the process serves HTTP.
        daphne_server.HTTPFactory = LimitedHTTPFactory
        super().run()
