"""requests under the address policy: only inside `guarded()`, on every connection, and with no redirects."""

import pytest
import requests

from routing.requests_guard import guarded
from tests.dashboard.alerts.receivers import Receiver


@pytest.fixture(autouse=True)
def private_forbidden(settings):
    settings.ALLOW_PRIVATE_UPSTREAMS = False


def test_inside_the_guard_an_internal_address_is_refused_before_connecting():
    with Receiver(200) as hook, guarded() as refusals:
        with pytest.raises(requests.ConnectionError):
            requests.post(hook.url.replace("127.0.0.1", "localhost") + "/x", timeout=5)
    assert hook.received == [] and len(refusals) == 1 and "local network" in refusals[0]


def test_the_guard_follows_work_apprise_hands_to_its_threads():
    import contextvars
    from concurrent.futures import ThreadPoolExecutor

    with Receiver(200) as hook, guarded() as refusals, ThreadPoolExecutor(1) as pool:
        context = contextvars.copy_context()  # what Apprise's submit_with_context does
        failed = pool.submit(context.run, lambda: requests.post(hook.url, timeout=5)).exception()
    assert isinstance(failed, requests.ConnectionError) and hook.received == [] and refusals


def test_outside_the_guard_requests_is_left_alone():
    with Receiver(307, 200, headers={"Location": "/next"}) as hook:
        assert requests.post(hook.url + "/x", timeout=5).status_code == 200  # followed, on loopback
    assert [r.path for r in hook.received] == ["/x", "/next"]
