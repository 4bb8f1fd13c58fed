"""Old verdicts are pruned with the rest of old data: each rollout keeps its newest and each step's last."""

import pytest

from probes import tasks
from routing.rollouts.models import RolloutVerdict

from .helpers import draft, world

pytestmark = pytest.mark.django_db


def verdicts(rollout, step, n):
    RolloutVerdict.objects.bulk_create(
        RolloutVerdict(rollout=rollout, step=step, verdict="inconclusive", sentence=f"step {step} look {i}")
        for i in range(n))


def test_pruning_keeps_each_rollout_s_newest_verdicts_and_every_step_s_last(settings):
    settings.ROLLOUT_VERDICTS_KEPT = 50
    w = world()
    busy = draft(w)
    verdicts(busy, 0, 30)
    verdicts(busy, 1, 80)
    quiet = draft(w, state="rolled_back")
    verdicts(quiet, 0, 10)
    last_of_first_step = busy.verdicts.filter(step=0).order_by("-id").first()

    assert tasks.prune_old_data()["rollout_verdicts"] == 59
    assert busy.verdicts.filter(step=1).count() == 50
    assert list(busy.verdicts.filter(step=0)) == [last_of_first_step]
    assert quiet.verdicts.count() == 10
    assert tasks.prune_old_data()["rollout_verdicts"] == 0  # safe to run twice
