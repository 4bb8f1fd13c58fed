"""Who may draft a rollout and press its gates: the page and the API ask the same helper (dashboard.roles).

A gate needs the rollout permission and, for every gate that moves weights (all but pause), the weights
permission too; drafting a rollout needs the weights permission as well, since starting it moves traffic."""

import pytest
from django.test import Client

from routing.models import AuditEvent
from routing.rollouts.models import Rollout, RolloutState
from tests.conftest import _token_client
from tests.routing.test_permissions import user_with

from .helpers import GUARDS, PLAN, draft, world

pytestmark = pytest.mark.django_db
URL = "/api/v1/rollouts"
GOOD = {"route": "chat", "canary": "canary", "plan": PLAN, "guards": GUARDS}
API_PATHS = {"promote": "promote-now"}
ROLLOUT_ONLY = ("rollouts.add_rollout", "rollouts.change_rollout")
OPERATOR = (*ROLLOUT_ONLY, "routing.change_routetarget")


def press(user, via, rollout, gate):
    """Press `gate` as `user` from the page or through the API; return the HTTP status."""
    if via == "api":
        path = API_PATHS.get(gate, gate)
        return _token_client(user).post(f"{URL}/{rollout.pk}/{path}", {"reason": "go"}, format="json").status_code
    browser = Client()
    browser.force_login(user)
    return browser.post(f"/rollouts/{rollout.pk}/{gate}/", {"reason": "go"}).status_code


def state(rollout):
    return Rollout.objects.get(pk=rollout.pk).state


@pytest.mark.parametrize("via", ["page", "api"])
def test_staff_without_permissions_press_no_gate_anywhere(via):
    rollout = draft(world())
    assert press(user_with("stan"), via, rollout, "start") == 403
    assert state(rollout) == RolloutState.DRAFT
    assert not AuditEvent.objects.filter(object_type="rollout").exists()


@pytest.mark.parametrize("via", ["page", "api"])
@pytest.mark.parametrize(("gate", "from_state"), [
    ("start", RolloutState.DRAFT), ("approve", RolloutState.AWAITING_APPROVAL), ("resume", RolloutState.PAUSED),
    ("promote", RolloutState.RUNNING), ("abort", RolloutState.RUNNING), ("retry", RolloutState.ABORTED),
])
def test_the_rollout_permission_alone_presses_no_gate_that_moves_weights(via, gate, from_state):
    w = world()
    rollout = draft(w, state=from_state, baseline={"stable": 100, "canary": 0})
    assert press(user_with("rita", *ROLLOUT_ONLY), via, rollout, gate) == 403
    assert state(rollout) == from_state and w.route.weights() == {"stable": 100, "canary": 0}


@pytest.mark.parametrize("via", ["page", "api"])
def test_the_rollout_permission_alone_may_pause(via):
    rollout = draft(world(), state=RolloutState.RUNNING, baseline={"stable": 100, "canary": 0})
    assert press(user_with("rita", *ROLLOUT_ONLY), via, rollout, "pause") in (200, 302)
    assert state(rollout) == RolloutState.PAUSED


@pytest.mark.parametrize("via", ["page", "api"])
def test_the_weights_permission_alone_presses_no_gate(via):
    rollout = draft(world())
    assert press(user_with("wendy", "routing.change_routetarget"), via, rollout, "start") == 403
    assert state(rollout) == RolloutState.DRAFT


@pytest.mark.parametrize("via", ["page", "api"])
def test_an_operator_with_both_permissions_starts_a_rollout(via):
    rollout = draft(world())
    assert press(user_with("otto", *OPERATOR), via, rollout, "start") in (200, 302)
    assert state(rollout) == RolloutState.PREFLIGHT


def test_drafting_a_rollout_needs_the_weights_permission_too():
    world()
    refused = _token_client(user_with("rita", *ROLLOUT_ONLY)).post(f"{URL}/", GOOD, format="json")
    assert refused.status_code == 403 and not Rollout.objects.exists()
    created = _token_client(user_with("otto", *OPERATOR)).post(f"{URL}/", GOOD, format="json")
    assert created.status_code == 201, created.json()
