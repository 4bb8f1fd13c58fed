"""Rollout choices that models and pages need without the statistics: importing this loads no scipy or numpy,
so every process that sets Django up (gateway workers included) stays light."""

from django.db.models import TextChoices


class Verdict(TextChoices):
    PASS = "pass", "Pass"
    FAIL = "fail", "Fail"
    INCONCLUSIVE = "inconclusive", "Inconclusive"
