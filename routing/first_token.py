"""How long a deployment may take to its first streamed token: the one home of that rule.

A fixed timeout either waits too long for a chat model that answers in
300 ms or cuts off a reasoning model that thinks for a minute, so each
deployment gets its own, in this order:

  override  the deployment's `first_token_timeout`, when an admin set one;
  learned   GATEWAY_FIRST_TOKEN_MULTIPLE x its p99 time to first token over the
            last LEARN_WINDOW (probes and gateway traffic alike, from the
            per-minute rollups), kept between GATEWAY_FIRST_TOKEN_FLOOR_S and
            GATEWAY_FIRST_TOKEN_CEILING_S, once GATEWAY_FIRST_TOKEN_MIN_SAMPLES
            first tokens were measured;
  default   GATEWAY_FIRST_TOKEN_TIMEOUT_S until enough is known.

A timed-out attempt has no time to first token, so a silent deployment
never teaches the rule to wait longer for it. The gateway's snapshot holds
the value in effect per target (computed off the request path, re-learned
every LEARN_EVERY_S); the API and the deployment page show the same value
from the same rollups, with its source.
"""

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone

from probes import rollups, sketch

LEARN_WINDOW = timedelta(hours=1)
LEARN_EVERY_S = 30.0  # how often a gateway process re-reads the rollups for the learned values
QUANTILE = 0.99


class TimeoutSource(models.TextChoices):
    OVERRIDE = "override", "override"
    LEARNED = "learned", "learned"
    DEFAULT = "default", "default until enough is known"


@dataclass(frozen=True, slots=True)
class FirstTokenTimeout:
    """The first-token timeout in effect for one deployment, and where it comes from."""

    seconds: float
    source: str
    samples: int = 0  # first tokens measured over LEARN_WINDOW
    ttft_p99_ms: float | None = None

    @property
    def detail(self):
        """Return the source as a person reads it ("learned from 412 requests")."""
        if self.source == TimeoutSource.LEARNED:
            return f"learned from {self.samples} requests"
        return TimeoutSource(self.source).label

    def as_dict(self):
        return {"seconds": self.seconds, "source": self.source, "detail": self.detail, "samples": self.samples,
                "ttft_p99_ms": None if self.ttft_p99_ms is None else round(self.ttft_p99_ms, 1)}


def _rounded(seconds):
    """Return `seconds` to two significant digits (1.3, 4.8, 13, 87): readable, and stable from one minute of
    measurements to the next, so the gateways rebuild their snapshot only when the value really moved."""
    return float(f"{seconds:.2g}")


def effective(override, learned=None):
    """Return the FirstTokenTimeout of a deployment with `override` (seconds or None) and `learned`
    ((p99 ms, samples) of its recent first tokens, or None)."""
    samples, p99_ms = (learned[1], learned[0]) if learned else (0, None)
    if override:
        return FirstTokenTimeout(float(override), TimeoutSource.OVERRIDE, samples, p99_ms)
    if p99_ms is None or samples < settings.GATEWAY_FIRST_TOKEN_MIN_SAMPLES:
        return FirstTokenTimeout(settings.GATEWAY_FIRST_TOKEN_TIMEOUT_S, TimeoutSource.DEFAULT, samples, p99_ms)
    seconds = settings.GATEWAY_FIRST_TOKEN_MULTIPLE * p99_ms / 1000
    seconds = min(max(seconds, settings.GATEWAY_FIRST_TOKEN_FLOOR_S), settings.GATEWAY_FIRST_TOKEN_CEILING_S)
    return FirstTokenTimeout(_rounded(seconds), TimeoutSource.LEARNED, samples, p99_ms)


def learned(deployment_ids=None, now=None):
    """Return {deployment id: (p99 ms, samples)} of the first tokens measured over the last LEARN_WINDOW
    (one query over the rollups; deployments without any are left out)."""
    since = (now or timezone.now()) - LEARN_WINDOW
    merged = rollups.ttft_by_deployment(since, deployment_ids)
    return {deployment_id: (sketch.quantiles(ttft, (QUANTILE,))[QUANTILE], int(ttft.count))
            for deployment_id, ttft in merged.items() if ttft.count}


def in_effect(deployment):
    """Return the FirstTokenTimeout of one Deployment now (reads its rollups)."""
    return effective(deployment.first_token_timeout, learned([deployment.pk]).get(deployment.pk))
