"""The private-network policy of routing.netguard for `requests` (Apprise's HTTP).

Apprise's plugins each call `requests.post`/`requests.request` themselves, on a fresh Session, most with
redirects on, so no session or adapter can be handed to them. The seam is one level down: inside `guarded()`,
every connection urllib3 opens resolves its host once with `netguard.resolve_checked` and dials a checked
address (TLS still verifies and sends SNI for the URL's host name), as the webhooks' `GuardedTransport` and
the gateway's `GuardedResolver` do; and no redirect is followed (the 3xx is the answer).

The guard is a ContextVar: Apprise copies the caller's context into the worker threads it sends from, and
code outside a `guarded()` block (an OTLP exporter on requests, say) is left alone.

Limits: only connections urllib3 opens are covered, so only HTTP(S) Apprise schemes are allowed (SMTP, MQTT,
XMPP and the like are not; see dashboard.alerts.targets.APPRISE_SCHEMES). With HTTP(S)_PROXY set in the
environment, requests dials the proxy (checked like any host) and the proxy decides where the request goes.
"""

import contextvars
import threading
from contextlib import contextmanager

import requests
from urllib3.util import connection as urllib3_connection

from routing.netguard import UpstreamBlocked, resolve_checked


class BlockedConnect(OSError, UpstreamBlocked):
    """Refused before connecting: the host is, or resolves to, an internal address."""


_refusals = contextvars.ContextVar("weathervane_requests_guard", default=None)  # a list while guarded
_installed = []
_install_lock = threading.Lock()


def _install():
    """Wrap urllib3's connection factory and requests' redirect lookup once per process (both pass through
    outside a `guarded()` block)."""
    with _install_lock:
        if _installed:
            return
        create, redirect_target = urllib3_connection.create_connection, requests.Session.get_redirect_target
        urllib3_connection.create_connection = lambda address, *args, **kwargs: _connect(create, address,
                                                                                         *args, **kwargs)
        requests.Session.get_redirect_target = lambda session, response: (
            None if _refusals.get() is not None else redirect_target(session, response))
        _installed.append((create, redirect_target))


def _connect(create, address, *args, **kwargs):
    refusals = _refusals.get()
    if refusals is None:
        return create(address, *args, **kwargs)
    host, port = address
    try:
        addresses = resolve_checked(host, port)
    except UpstreamBlocked as blocked:
        refusals.append(str(blocked))
        raise BlockedConnect(str(blocked)) from None
    failure = None
    for ip in addresses:
        try:
            return create((ip, port), *args, **kwargs)
        except OSError as exc:
            failure = exc
    raise failure


@contextmanager
def guarded():
    """Within the block (and the threads it hands work to with its context), requests connects only to
    addresses the policy allows and follows no redirect. Yields the list of refusals made meanwhile."""
    _install()
    refusals = []
    token = _refusals.set(refusals)
    try:
        yield refusals
    finally:
        _refusals.reset(token)
