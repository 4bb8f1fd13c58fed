"""The private-network policy of routing.netguard for httpx (probes, admin-side calls).

httpx would resolve a host name itself after any check done beforehand, so a
name that answers public first and 127.0.0.1 next (DNS rebinding) would get a
probe into the private network. `GuardedTransport` resolves once, checks every
address with the one policy (`netguard.resolve_checked`, as the gateway's
`GuardedResolver` checks with `netguard.is_internal`) and connects to a checked
address; TLS still verifies and sends SNI for the URL's host name, and the Host
header is the URL's.
"""

import httpcore
import httpx

from routing.netguard import UpstreamBlocked, resolve_checked


class BlockedConnect(httpcore.ConnectError, UpstreamBlocked):
    """Refused before connecting: the host is, or resolves to, an internal address."""


class GuardedBackend(httpcore.NetworkBackend):
    """httpcore's network backend, connecting only to addresses the policy allows."""

    def __init__(self, inner=None):
        self._inner = inner or httpcore.SyncBackend()

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        try:
            addresses = resolve_checked(host, port)
        except UpstreamBlocked as blocked:
            raise BlockedConnect(str(blocked)) from None
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from None
        failure = None
        for address in addresses:
            try:
                return self._inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except httpcore.ConnectTimeout:
                raise
            except httpcore.ConnectError as exc:
                failure = exc
        raise failure

    def connect_unix_socket(self, path, timeout=None, socket_options=None):
        raise httpcore.ConnectError("unix sockets are not upstreams")

    def sleep(self, seconds):
        self._inner.sleep(seconds)


class GuardedTransport(httpx.HTTPTransport):
    """httpx's transport on a `GuardedBackend` (a transport passed to a client also turns off env proxies,
    which would otherwise connect on the probe's behalf, unchecked)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        # httpx has no option for the network backend; its httpcore pool has, read when connecting.
        self._pool._network_backend = GuardedBackend(self._pool._network_backend)


def is_blocked(exc):
    """Return True when an httpx error means the policy refused the connection."""
    return isinstance(exc, BlockedConnect) or isinstance(exc.__cause__, BlockedConnect)
