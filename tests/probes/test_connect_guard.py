"""A probe connects only to addresses the private-network policy allows, checked when connecting
(routing.httpx_guard), so DNS rebinding cannot get it into the private network."""

import socket
from urllib.parse import urlsplit

import httpcore
import pytest

from probes import measure
from probes.measure import ProbeRequest
from probes.models import Outcome
from routing import netguard
from tests.probes.conftest import GOOD_KEY
from tests.routing.test_netguard import INTERNAL_FORMS

pytestmark = pytest.mark.timeout(30)

PUBLIC = "93.184.216.34"


@pytest.mark.parametrize("host", INTERNAL_FORMS)
def test_every_form_of_an_internal_address_is_refused_by_a_probe_without_connecting(host, simulator, settings):
    settings.ALLOW_PRIVATE_UPSTREAMS = False
    port = urlsplit(simulator.base_url).port
    probe = ProbeRequest(url=f"http://{host}:{port}/v1/chat/completions", model="instant", payload={},
                         secret=GOOD_KEY, timeout_s=2, connect_timeout_s=1)
    measured = measure.probe(probe)
    # httpx itself refuses to parse an octal IPv4 address; every other form reaches the guard.
    refusal = "Invalid IPv4 address" if host == "0177.0.0.1" else "internal address"
    assert measured.outcome == Outcome.CONNECT_ERROR and refusal in measured.error
    assert simulator.simulator.attempts() == []


def _rebinding_dns(monkeypatch):
    """A name that answers a public address the first time it is asked and 127.0.0.1 afterwards."""
    asked = []

    def getaddrinfo(host, port, *args, **kwargs):
        if host != "rebind.example.com":
            return real(host, port, *args, **kwargs)
        asked.append(host)
        address = PUBLIC if len(asked) == 1 else "127.0.0.1"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port or 0))]

    real = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return asked


def _no_internet(monkeypatch):
    """Connections to the public address fail at once, as they would here anyway, without leaving the machine."""
    connect = httpcore.SyncBackend.connect_tcp
    tried = []

    def guarded(self, host, port, *args, **kwargs):
        tried.append(host)
        if host == PUBLIC:
            raise httpcore.ConnectError("no internet in tests")
        return connect(self, host, port, *args, **kwargs)

    monkeypatch.setattr(httpcore.SyncBackend, "connect_tcp", guarded)
    return tried


def test_dns_rebinding_cannot_get_a_probe_into_the_private_network(simulator, settings, monkeypatch):
    settings.ALLOW_PRIVATE_UPSTREAMS = False
    asked, tried = _rebinding_dns(monkeypatch), _no_internet(monkeypatch)
    port = urlsplit(simulator.base_url).port
    probe = ProbeRequest(url=f"http://rebind.example.com:{port}/v1/chat/completions", model="instant",
                         payload=measure.build_payload("instant", "hi", 4), secret=GOOD_KEY, timeout_s=2,
                         connect_timeout_s=1)
    measured = measure.probe(probe)
    assert measured.outcome == Outcome.CONNECT_ERROR
    assert simulator.simulator.attempts() == []
    assert asked == ["rebind.example.com"] and tried == [PUBLIC]  # resolved once, connected to what was checked


def test_a_name_resolving_internal_at_connect_time_is_refused_by_a_probe(simulator, settings, monkeypatch):
    settings.ALLOW_PRIVATE_UPSTREAMS = False
    asked = _rebinding_dns(monkeypatch)
    netguard.check_host("rebind.example.com")  # the check when it was saved: public
    port = urlsplit(simulator.base_url).port
    probe = ProbeRequest(url=f"http://rebind.example.com:{port}/v1/chat/completions", model="instant",
                         payload={}, secret=GOOD_KEY, timeout_s=2, connect_timeout_s=1)
    measured = measure.probe(probe)
    assert measured.outcome == Outcome.CONNECT_ERROR and "internal address" in measured.error
    assert simulator.simulator.attempts() == [] and len(asked) == 2


