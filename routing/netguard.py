"""Where Weathervane may send requests: checks on provider base URLs.

A base URL must be http(s), carry no credentials, and (unless
settings.ALLOW_PRIVATE_UPSTREAMS) must not point at loopback, private,
link-local or otherwise internal addresses. The check runs when a provider is
saved and again when a connection is made, because a hostname can resolve to
a different address later (DNS rebinding).
"""

import ipaddress
import socket
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError


class UpstreamBlocked(Exception):
    """The upstream address is not allowed by the private-network policy."""


def is_internal(address):
    """Return True for loopback, private, link-local, reserved or unspecified IPs."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def _allow_private(allow_private):
    return settings.ALLOW_PRIVATE_UPSTREAMS if allow_private is None else allow_private


def validate_upstream_url(url, allow_private=None):
    """Raise ValidationError saying what is wrong with `url` as a provider base URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValidationError("Base URL must start with http:// or https://.", code="scheme")
    if parts.username or parts.password:
        raise ValidationError("Base URL must not contain credentials; store the key as an API key instead.", code="credentials")
    if not parts.hostname:
        raise ValidationError("Base URL must name a host.", code="host")
    if parts.query or parts.fragment:
        raise ValidationError("Base URL must not have a query string or fragment.", code="query")
    try:
        parts.port
    except ValueError:
        raise ValidationError("Base URL has an invalid port.", code="port") from None
    if not _allow_private(allow_private):
        try:
            check_host(parts.hostname, allow_private=False, resolve=False)
        except UpstreamBlocked as blocked:
            raise ValidationError(str(blocked), code="private") from None


def check_host(host, allow_private=None, resolve=True):
    """Raise UpstreamBlocked if `host` is, or resolves to, an internal address.

    With resolve=False only literal IPs and well-known local names are judged
    (used at save time, where DNS may not be reachable).
    """
    if _allow_private(allow_private):
        return
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith((".localhost", ".local", ".internal")):
        raise UpstreamBlocked(f"Upstream host {host} is on a local network; set WEATHERVANE_ALLOW_PRIVATE_UPSTREAMS=true to allow it.")
    try:
        addresses = [str(ipaddress.ip_address(host))]
    except ValueError:
        addresses = _resolve(host) if resolve else []
    for address in addresses:
        if is_internal(address):
            raise UpstreamBlocked(
                f"Upstream host {host} resolves to an internal address; set WEATHERVANE_ALLOW_PRIVATE_UPSTREAMS=true to allow it."
            )


def _resolve(host):
    try:
        return sorted({info[4][0] for info in socket.getaddrinfo(host, None)})
    except socket.gaierror:
        return []
