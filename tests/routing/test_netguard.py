"""Every spelling of an internal address is refused when a provider is saved and when the gateway connects
(upstream.GuardedResolver); the probes' connect-time guard is tested in tests/probes/test_connect_guard.py."""

import socket

import pytest
from django.core.exceptions import ValidationError

from routing import netguard
from routing.gateway import upstream

pytestmark = pytest.mark.timeout(30)

INTERNAL_FORMS = [
    "2130706433", "127.1", "0177.0.0.1", "0", "0x7f.0.0.1",  # numeric IPv4 spellings of 127.0.0.1 and 0.0.0.0
    "[64:ff9b::7f00:1]", "[64:ff9b::a00:1]",  # NAT64 of 127.0.0.1 and 10.0.0.1
    "[2002:7f00:1::]", "[2002:c0a8:1::1]",  # 6to4 of 127.0.0.1 and 192.168.0.1
    "[::127.0.0.1]", "[::10.0.0.1]",  # IPv4-compatible
    "[::ffff:0:127.0.0.1]", "[::ffff:0:169.254.169.254]",  # IPv4-translated
    "[fec0::1]",  # site-local
]


@pytest.mark.parametrize("host", INTERNAL_FORMS)
def test_every_form_of_an_internal_address_is_refused_at_save(host):
    with pytest.raises(ValidationError) as refused:
        netguard.validate_upstream_url(f"http://{host}:8001/v1", allow_private=False)
    assert refused.value.code == "private"
    netguard.validate_upstream_url(f"http://{host}:8001/v1", allow_private=True)


@pytest.mark.parametrize("host", ["8.8.8.8", "[64:ff9b::808:808]", "[2606:4700::1111]", "api.openai.com"])
def test_public_addresses_stay_allowed(host):
    netguard.validate_upstream_url(f"https://{host}/v1", allow_private=False)


@pytest.mark.parametrize("address", ["127.0.0.1", "64:ff9b::7f00:1", "2002:7f00:1::", "::ffff:0:a00:1", "fec0::1"])
async def test_the_gateway_refuses_a_name_resolving_to_any_internal_form(address, settings, monkeypatch):
    settings.ALLOW_PRIVATE_UPSTREAMS = False

    async def resolve(self, host, port=0, family=socket.AF_INET):
        return [{"hostname": host, "host": address, "port": port, "family": socket.AF_INET6, "proto": 0, "flags": 0}]

    monkeypatch.setattr(upstream.DefaultResolver, "resolve", resolve)
    resolver = upstream.GuardedResolver()
    with pytest.raises(OSError, match="internal address"):
        await resolver.resolve("rebind.example.com", 443)
    await resolver.close()


@pytest.mark.parametrize("host", ["2130706433", "[::ffff:0:127.0.0.1]", "[64:ff9b::a9fe:a9fe]"])
def test_the_api_refuses_to_save_a_provider_at_an_internal_address(admin_api, settings, host):
    from routing.models import Provider

    settings.ALLOW_PRIVATE_UPSTREAMS = False
    response = admin_api.post("/api/v1/providers/", {"name": "p", "base_url": f"http://{host}/v1"}, format="json")
    assert response.status_code == 400 and "internal address" in str(response.json()["base_url"])
    assert not Provider.objects.exists()
