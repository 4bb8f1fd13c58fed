"""The demo seeds a ready-to-start rollout of tail-gpt onto gpt-demo."""

from io import StringIO

import pytest
from django.core.management import call_command

from routing.rollouts.api.serializers import RolloutSerializer
from routing.rollouts.models import Rollout, RolloutState

pytestmark = pytest.mark.django_db


def test_the_demo_rollout_is_a_valid_draft_that_staff_can_start(admin_api):
    call_command("seed_demo", stdout=StringIO())
    rollout = Rollout.objects.get()
    assert (rollout.route.name, rollout.canary.name, rollout.state) == ("gpt-demo", "tail-gpt", RolloutState.DRAFT)
    as_input = {"route": "gpt-demo", "canary": "tail-gpt", "plan": rollout.plan, "guards": rollout.guards}
    serializer = RolloutSerializer(data=as_input)
    assert serializer.is_valid(), serializer.errors  # the API's own rules accept it
    started = admin_api.post(f"/api/v1/rollouts/{rollout.pk}/start", {"reason": "demo"}, format="json")
    assert started.status_code == 200 and started.json()["state"] == "preflight"
    assert started.json()["baseline"] == {"flaky-gpt": 0, "steady-gpt": 90, "tail-gpt": 10}
