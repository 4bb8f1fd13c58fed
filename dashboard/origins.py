"""Which browser origins may open the live socket.

Like Django's CSRF check, an origin is accepted when scheme, host and port all
equal the socket's own (the Host it was reached at, which must be in
ALLOWED_HOSTS), or when it is listed in CSRF_TRUSTED_ORIGINS. Channels' own
AllowedHostsOriginValidator compares host names only, so http://host:9999 or a
plain-http page could talk to a wss:// socket.
"""

from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host

DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin_tuple(scheme, host, port):
    """Return (scheme, host, port) with the host unbracketed and lowercased and the port filled in."""
    scheme = scheme.lower()
    if scheme not in DEFAULT_PORTS or not host:
        return None
    return scheme, host.strip("[]").lower(), int(port) if port else DEFAULT_PORTS[scheme]


def parse_origin(value):
    """Return the (scheme, host, port) of an Origin header value, or None if it is not one."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.path or parts.query or parts.fragment or parts.username or parts.password:
        return None
    return _origin_tuple(parts.scheme, parts.hostname, port)


def _secure(scope, headers):
    if scope.get("scheme") in ("wss", "https"):
        return True
    proxy_header = settings.SECURE_PROXY_SSL_HEADER
    if not proxy_header:
        return False
    name = proxy_header[0].removeprefix("HTTP_").replace("_", "-").lower().encode()
    return headers.get(name, b"").decode("latin1").split(",")[0].strip() == proxy_header[1]


def socket_origin(scope):
    """Return the (scheme, host, port) the browser reached this socket at, or None when its Host is not allowed."""
    headers = dict(scope.get("headers") or [])
    host = headers.get(b"host", b"").decode("latin1")
    if not host and scope.get("server"):
        server_host, server_port = scope["server"][:2]
        host = f"{server_host}:{server_port}"
    domain, port = split_domain_port(host)
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return None
    return _origin_tuple("https" if _secure(scope, headers) else "http", domain, port or None)


def origin_allowed(scope):
    """Return True when the socket's Origin header names the socket's own origin or a trusted one."""
    values = [value for name, value in scope.get("headers") or [] if name == b"origin"]
    if len(values) != 1:
        return False
    origin = parse_origin(values[0].decode("latin1"))
    if origin is None:
        return False
    trusted = {parse_origin(value) for value in settings.CSRF_TRUSTED_ORIGINS}
    return origin in trusted or origin == socket_origin(scope)


class SameOriginValidator:
    """ASGI middleware that refuses a WebSocket whose Origin is not the socket's own or a trusted one."""

    def __init__(self, application):
        self.application = application

    async def __call__(self, scope, receive, send):
        if scope["type"] != "websocket":
            raise ValueError("SameOriginValidator only guards WebSocket connections.")
        if not origin_allowed(scope):
            return await WebsocketDenier()(scope, receive, send)
        return await self.application(scope, receive, send)
