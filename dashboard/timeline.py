"""The timeline as the page and its JSON show it: operational events filtered by kind, route, deployment and
actor, paged newest first by a cursor, each linked to its object, with runs of a flapping object folded.

A run is consecutive events (in the filtered list) of one flapping family on one object: a deployment's or
key's health going up and down, a circuit opening and closing, a key rate-limited and active again. Its
newest event carries `run` (how many; the page shows "×12" and expands the rest), the others `run` 0.
Weight changes, rollouts and the rest are decisions, not noise: they never fold.
"""

from urllib.parse import quote

from django import forms
from django.db.models import Q
from django.urls import reverse

from routing.models import Deployment, Event, EventKind, Route

PAGE_SIZE = 50
MAX_ID = 2**63 - 1
FLAPPING = {
    EventKind.HEALTH: "health",
    EventKind.CIRCUIT_OPEN: "circuit", EventKind.CIRCUIT_HALF_OPEN: "circuit", EventKind.CIRCUIT_CLOSED: "circuit",
    EventKind.KEY_RATE_LIMITED: "key", EventKind.KEY_ACTIVE: "key", EventKind.KEY_SUSPECT: "key",
}


class TimelineQuery(forms.Form):
    """The timeline's query parameters; empty ones mean "any" (the page's filter form sends them empty)."""

    kind = forms.ChoiceField(choices=[("", "any"), *EventKind.choices], required=False)
    route = forms.CharField(required=False, max_length=100)
    deployment = forms.CharField(required=False, max_length=100)
    actor = forms.CharField(required=False, max_length=150)
    before = forms.IntegerField(required=False, min_value=1, max_value=MAX_ID,
                                help_text="Older than this event (the `next` cursor of the previous page)")

    def clean_route(self):
        return _known(self.cleaned_data["route"], Route.all_objects, "route")

    def clean_deployment(self):
        return _known(self.cleaned_data["deployment"], Deployment.objects, "deployment")

    def clean_actor(self):
        actor = self.cleaned_data["actor"]
        if "\x00" in actor:
            raise forms.ValidationError("An actor name has no NUL characters.")
        return actor

    def clean_before(self):
        before = self.cleaned_data["before"]
        if before is not None and not Event.objects.filter(pk=before).exists():
            raise forms.ValidationError(f"No event {before}: use the `next` cursor a page gave.")
        return before


def _known(name, objects, what):
    if name and not objects.filter(name=name).exists():
        raise forms.ValidationError(f"No {what} named {name[:100]!r}.")
    return name


class BadQuery(ValueError):
    """A malformed timeline query; `errors` is {parameter: [messages]}."""

    def __init__(self, errors):
        super().__init__("; ".join(f"{name}: {' '.join(messages)}" for name, messages in errors.items()))
        self.errors = errors


def parse(params):
    """Return the cleaned filters of a query dict; raise BadQuery naming each bad parameter."""
    query = TimelineQuery(params)
    if not query.is_valid():
        raise BadQuery({name: list(messages) for name, messages in query.errors.items()})
    return query.cleaned_data


def page(filters, size=PAGE_SIZE):
    """Return {events, filters, next}: up to `size` events matching `filters` (parse()), newest first, each
    with its links, actor and run; `next` is the cursor of the following (older) page, or None."""
    events = list(_matching(filters)[:size + 1])
    more = len(events) > size
    events = events[:size]
    rows = [_row(event) for event in events]
    _fold(events, rows)
    shown = {name: value for name, value in filters.items() if value not in (None, "") and name != "before"}
    return {"events": rows, "filters": shown, "next": events[-1].pk if more else None,
            "older": bool(filters.get("before"))}


def _matching(filters):
    events = Event.objects.select_related("route", "deployment", "api_key")
    if filters.get("kind"):
        events = events.filter(kind=filters["kind"])
    if filters.get("route"):
        events = events.filter(route__name=filters["route"])
    if filters.get("deployment"):
        events = events.filter(deployment__name=filters["deployment"])
    if filters.get("actor"):
        events = events.filter(data__actor=filters["actor"])
    if filters.get("before"):
        cursor = Event.objects.get(pk=filters["before"])
        events = events.filter(Q(created_at__lt=cursor.created_at) | Q(created_at=cursor.created_at, pk__lt=cursor.pk))
    return events


def _row(event):
    data = event.data if isinstance(event.data, dict) else {}
    return {**event.payload(), "actor": str(data.get("actor") or ""), "links": links(event), "run": 1}


def links(event):
    """Return [{label, url}] of the pages of what `event` is about: its rollout, deployment and route."""
    found = []
    rollout = (event.data or {}).get("rollout") if isinstance(event.data, dict) else None
    if event.kind == EventKind.ROLLOUT and isinstance(rollout, int):
        found.append({"label": f"rollout #{rollout}", "url": reverse("rollout", args=[rollout])})
    if event.deployment_id:
        found.append({"label": event.deployment.name, "url": reverse("deployment", args=[event.deployment.name])})
    if event.route_id and event.route.archived_at is None:
        found.append({"label": event.route.name, "url": route_url(event.route.name)})
    return found


def route_url(name):
    """The routes page at one route's section."""
    return f"{reverse('routes')}#route:{quote(name, safe='')}"


def groups(rows):
    """Return [{head, folded}] of page() rows: each run's newest event with the rest of its run."""
    found = []
    for row in rows:
        if row["run"]:
            found.append({"head": row, "folded": []})
        else:
            found[-1]["folded"].append(row)
    return found


def _run_key(event):
    family = FLAPPING.get(event.kind)
    return family and (family, event.route_id, event.deployment_id, event.api_key_id)


def _fold(events, rows):
    """Mark runs of consecutive events of one flapping family on one object (see the module's docstring)."""
    head, head_key = None, None
    for event, row in zip(events, rows, strict=True):
        key = _run_key(event)
        if key and key == head_key:
            head["run"] += 1
            row["run"] = 0
            row["run_of"] = head["id"]
        else:
            head, head_key = row, key
