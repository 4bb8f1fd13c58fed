"""The one notification shape that the alert engine hands to delivery (one per group, per change or repeat).

The engine (rules, grouping, inhibition, silences) builds a Message; delivery
(channels, retries, the delivery log) only renders and sends it. Neither
side reaches into the other's models beyond `Channel`.
"""

from dataclasses import asdict, dataclass, field, fields
from datetime import datetime

from django.conf import settings
from django.db import models


class Status(models.TextChoices):
    """A notification's (and an alert's) status."""

    FIRING = "firing", "Firing"
    RESOLVED = "resolved", "Resolved"


@dataclass(frozen=True)
class AlertItem:
    """One alert inside a group notification."""

    rule: str  # the rule's name
    status: str  # "firing" or "resolved"
    severity: str  # "critical", "warning" or "info"
    summary: str  # one sentence a person reads, e.g. "gpt-demo p95 TTFT 2.4 s > 2 s for 5 min"
    labels: dict[str, str]
    started_at: datetime
    ended_at: datetime | None = None


@dataclass(frozen=True)
class Message:
    """One notification of one alert group to one or more channels."""

    group_key: str  # stable for the group, e.g. 'route="gpt-demo",rule="error rate"'
    status: str  # "firing" while any alert of the group fires, else "resolved"
    severity: str  # the highest severity in the group
    title: str
    text: str
    labels: dict[str, str]  # the labels the group shares
    alerts: tuple[AlertItem, ...] = field(default_factory=tuple)
    url: str = ""  # the alerts page (page_url): absolute when WEATHERVANE_PUBLIC_URL is set
    sent_at: datetime | None = None

    def as_json(self):
        """A JSON-ready dict (datetimes as ISO 8601), the body of the webhook channel."""
        def plain(value):
            if isinstance(value, datetime):
                return value.isoformat()
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return [plain(v) for v in value]
            return value

        return plain(asdict(self))

    def subject(self):
        """One line for an email subject or a chat title: `[FIRING] gpt-demo error rate` (a title that already
        starts with its status, as the engine's `[FIRING:2] …` do, is not tagged twice)."""
        tag = f"[{self.status.upper()}"
        return self.title if self.title.startswith(tag) else f"{tag}] {self.title}"

    def as_text(self):
        """The plain-text body of chat and email channels: the text, one line per alert, the page's address."""
        lines = [self.text] if self.text else []
        for alert in self.alerts:
            lines.append(f"- [{alert.status}] {alert.severity}: {alert.summary}")
        if self.url:
            lines.append(self.url)
        return "\n".join(lines) or self.title

    @classmethod
    def from_json(cls, data):
        """Return the Message that `as_json()` made `data` from (how it travels to a Celery worker)."""
        data = dict(data)
        data["alerts"] = tuple(AlertItem(**_datetimes(AlertItem, item)) for item in data.get("alerts", ()))
        return cls(**_datetimes(cls, data))


def page_url(path="/alerts/"):
    """Return the address of a dashboard page for a notification: absolute under WEATHERVANE_PUBLIC_URL (a mail or
    chat reader has no server to resolve a path against); the bare path when it is unset (check --deploy warns)."""
    return f"{settings.PUBLIC_URL.rstrip('/')}{path}" if settings.PUBLIC_URL else path


def _datetimes(cls, data):
    """`data` with the ISO 8601 strings of `cls`'s datetime fields parsed back."""
    names = {f.name for f in fields(cls) if "datetime" in str(f.type)}
    return {k: datetime.fromisoformat(v) if k in names and isinstance(v, str) else v for k, v in data.items()}
