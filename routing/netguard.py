"""Where Weathervane may send requests: checks on provider base URLs.

A base URL must be http(s), carry no credentials, and (unless
settings.ALLOW_PRIVATE_UPSTREAMS) must not point at loopback, private,
link-local or otherwise internal addresses. The check runs when a provider is
saved and again when a connection is made, because a hostname can resolve to
a different address later (DNS rebinding).
"""

import ipaddress
import re
import socket
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError


class UpstreamBlocked(Exception):
    """The upstream address is not allowed by the private-network policy."""


# IPv6 prefixes whose last 32 bits are an IPv4 address: NAT64, IPv4-translated, IPv4-compatible.
EMBEDS_IPV4 = tuple(ipaddress.ip_network(net) for net in ("64:ff9b::/96", "64:ff9b:1::/48", "::ffff:0:0:0/96", "::/96"))
SITE_LOCAL = ipaddress.ip_network("fec0::/10")
# Every spelling inet_aton accepts: 2130706433, 127.1, 0177.0.0.1, 0x7f.0.0.1, 0.
NUMERIC_IPV4 = re.compile(r"(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+)){0,3}", re.IGNORECASE)


def ip_literal(host):
    """Return the IP address `host` spells (in any numeric form), or None for a name."""
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if NUMERIC_IPV4.fullmatch(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:  # e.g. a part out of range: no address, so nothing to connect to
            return None
    return None


def _embedded_ipv4(ip):
    if ip.ipv4_mapped or ip.sixtofour:
        return ip.ipv4_mapped or ip.sixtofour
    if any(ip in net for net in EMBEDS_IPV4):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_internal(address):
    """Return True for loopback, private, link-local, site-local, reserved or unspecified IPs,
    and for IPv6 addresses that embed such an IPv4 address (NAT64, 6to4, mapped, compatible)."""
    is_ip = isinstance(address, (ipaddress.IPv4Address, ipaddress.IPv6Address))
    ip = address if is_ip else ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in SITE_LOCAL:
            return True
        embedded = _embedded_ipv4(ip)
        if embedded is not None and is_internal(embedded):
            return True
    return not ip.is_global or ip.is_multicast


ALLOW_HINT = "set WEATHERVANE_ALLOW_PRIVATE_UPSTREAMS=true to allow it."


def _allow_private(allow_private):
    return settings.ALLOW_PRIVATE_UPSTREAMS if allow_private is None else allow_private


def validate_upstream_url(url, allow_private=None):
    """Raise ValidationError saying what is wrong with `url` as a provider base URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValidationError("Base URL must start with http:// or https://.", code="scheme")
    if parts.username or parts.password:
        raise ValidationError("Base URL must not contain credentials; store the key as an API key instead.",
                              code="credentials")
    if not parts.hostname:
        raise ValidationError("Base URL must name a host.", code="host")
    if parts.query or parts.fragment:
        raise ValidationError("Base URL must not have a query string or fragment.", code="query")
    try:
        _ = parts.port
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
    _check_name(host)
    literal = ip_literal(host)
    addresses = [literal] if literal is not None else (_resolve(host) if resolve else [])
    for address in addresses:
        _check_address(host, address)


def resolve_checked(host, port, allow_private=None):
    """Resolve `host` once and return its addresses, every one checked (connect with these, not the name).

    Raises UpstreamBlocked when the name or any address is internal, OSError when it does not resolve.
    """
    literal = ip_literal(host)
    if literal is not None:
        addresses = [str(literal)]
    else:
        addresses = [info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]
    if not _allow_private(allow_private):
        _check_name(host)
        for address in addresses:
            _check_address(host, address)
    return list(dict.fromkeys(addresses))


def _check_name(host):
    name = host.strip("[]").rstrip(".").lower()
    if name == "localhost" or name.endswith((".localhost", ".local", ".internal")):
        raise UpstreamBlocked(f"Upstream host {name} is on a local network; {ALLOW_HINT}")


def _check_address(host, address):
    if is_internal(address):
        raise UpstreamBlocked(f"Upstream host {host.strip('[]')} resolves to an internal address; {ALLOW_HINT}")


def _resolve(host):
    try:
        return sorted({info[4][0] for info in socket.getaddrinfo(host, None)})
    except socket.gaierror:
        return []
