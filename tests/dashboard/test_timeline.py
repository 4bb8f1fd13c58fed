"""The timeline you can use: filters as query parameters (a bad one is a 400 naming it), pages by cursor, flapping
runs folded ("×12") with the rest one click away, and every event linked to what it is about."""

from datetime import timedelta

import pytest
from django.utils import timezone

from routing import weights
from routing.models import Event, EventKind
from tests.dashboard.test_pages import initial_data, signed_in

pytestmark = pytest.mark.django_db


def health(deployment, state, minutes_ago=0):
    return Event.objects.create(kind=EventKind.HEALTH, deployment=deployment, message=f"{deployment} is {state}",
                                created_at=timezone.now() - timedelta(minutes=minutes_ago),
                                data={"to": state})


def events(client, query=""):
    response = client.get(f"/dashboard-data/timeline/?{query}")
    assert response.status_code == 200, response.content
    return response.json()


@pytest.fixture
def history(seeded):
    """A weights change by alice, one by bob, and health changes of the canary in between."""
    weights.apply_weights(seeded["route"], {"stable": 80, "canary": 20}, reason="first", actor="alice")
    health(seeded["canary"], "down")
    weights.apply_weights(seeded["route"], {"stable": 70, "canary": 30}, reason="second", actor="bob")
    return seeded


@pytest.mark.parametrize("query, messages", [
    ("kind=health", ["canary is down"]),
    ("kind=weights&actor=bob", ["chat: canary 20→30, stable 80→70"]),
    ("actor=alice", ["chat: canary 10→20, stable 90→80"]),
    ("deployment=canary", ["canary is down"]),
    ("route=chat", ["chat: canary 20→30, stable 80→70", "chat: canary 10→20, stable 90→80"]),
    ("kind=&route=&deployment=&actor=", ["chat: canary 20→30, stable 80→70", "canary is down",
                                         "chat: canary 10→20, stable 90→80"]),
])
def test_the_timeline_filters_by_kind_route_deployment_and_actor(history, viewer_user, query, messages):
    client = signed_in(viewer_user)
    assert [e["message"] for e in events(client, query)["events"]] == messages
    page = client.get(f"/timeline/?{query}")
    assert [e["message"] for e in initial_data(page)["events"]] == messages


@pytest.mark.parametrize("query, parameter, says", [
    ("kind=weather", "kind", "weather is not one of the available choices"),
    ("route=nowhere", "route", "No route named 'nowhere'"),
    ("deployment=ghost", "deployment", "No deployment named 'ghost'"),
    ("before=abc", "before", "whole number"),
    ("before=999999", "before", "No event 999999"),
    ("before=0", "before", "greater than or equal to 1"),
    ("actor=" + "x" * 151, "actor", "at most 150 characters"),
])
def test_a_bad_filter_is_a_400_naming_the_parameter(history, viewer_user, query, parameter, says):
    client = signed_in(viewer_user)
    answer = client.get(f"/dashboard-data/timeline/?{query}")
    assert answer.status_code == 400 and list(answer.json()) == [parameter]
    assert says in " ".join(answer.json()[parameter])
    page = client.get(f"/timeline/?{query}")
    assert page.status_code == 400 and page.content.decode().startswith(f"{parameter}: ")


def test_the_timeline_pages_back_through_history_by_cursor(seeded, viewer_user):
    for n in range(60):
        Event.objects.create(kind=EventKind.PROVIDER_URL, message=f"change {n}",
                             created_at=timezone.now() - timedelta(minutes=n))
    client = signed_in(viewer_user)
    first = events(client)
    assert len(first["events"]) == 50 and first["events"][0]["message"] == "change 0" and first["next"]
    second = events(client, f"before={first['next']}")
    assert [e["message"] for e in second["events"]] == [f"change {n}" for n in range(50, 60)]
    assert second["next"] is None and second["older"] is True
    page = client.get("/timeline/").content.decode()
    assert f'href="?before={first["next"]}" rel="next"' in page
    older = client.get(f"/timeline/?before={first['next']}").content.decode()
    assert 'id="newest"' in older and 'rel="next"' not in older


def test_a_filtered_page_keeps_its_filters_in_the_next_link(seeded, viewer_user):
    for n in range(55):
        health(seeded["canary"], "down" if n % 2 else "up", minutes_ago=n)
    Event.objects.create(kind=EventKind.PROVIDER_URL, message="unrelated")
    first = signed_in(viewer_user).get("/timeline/?kind=health&deployment=canary")
    cursor = initial_data(first)["next"]
    assert f'href="?kind=health&amp;deployment=canary&amp;before={cursor}"' in first.content.decode()


def test_a_flapping_deployment_folds_into_one_row_that_opens_to_every_event(seeded, viewer_user):
    for n in range(12):
        health(seeded["canary"], "down" if n % 2 else "up", minutes_ago=20 - n)
    weights.apply_weights(seeded["route"], {"stable": 100, "canary": 0}, reason="drain the flapper", actor="alice")
    health(seeded["canary"], "up")
    client = signed_in(viewer_user)
    rows = events(client)["events"]
    assert [r["run"] for r in rows[:3]] == [1, 1, 12] and all(r["run"] == 0 for r in rows[3:14])
    assert all(r["run_of"] == rows[2]["id"] for r in rows[3:14])  # the weights change split the runs
    page = client.get("/timeline/").content.decode()
    assert page.count('<details class="run">') == 1 and ">×12</summary>" in page
    folded = page.split('<details class="run">')[1].split("</details>")[0]
    assert folded.count('<li class="event kind-health"') == 11


def test_decisions_never_fold(seeded, viewer_user):
    for share in (20, 30, 40):
        weights.apply_weights(seeded["route"], {"stable": 100 - share, "canary": share}, reason="ramp", actor="alice")
    assert [r["run"] for r in events(signed_in(viewer_user))["events"]] == [1, 1, 1]


def test_every_event_links_to_its_object(seeded, viewer_user):
    from routing.rollouts.models import Rollout

    rollout = Rollout.objects.create(route=seeded["route"], canary=seeded["canary"], created_by="admin",
                                     plan=[{"weight": 50, "min_dwell_s": 0, "min_requests": 0}],
                                     guards=[{"metric": "errors", "allowed": 0.01}])
    Event.objects.create(kind=EventKind.ROLLOUT, route=seeded["route"], deployment=seeded["canary"],
                         message="rollout started", data={"rollout": rollout.pk, "actor": "alice"})
    health(seeded["stable"], "up")
    client = signed_in(viewer_user)
    rows = {r["message"]: r for r in events(client)["events"]}
    assert [link["url"] for link in rows["rollout started"]["links"]] == [
        f"/rollouts/{rollout.pk}/", "/deployments/canary/", "/routes/#route:chat"]
    assert rows["rollout started"]["actor"] == "alice"
    assert [link["url"] for link in rows["stable is up"]["links"]] == ["/deployments/stable/"]
    page = client.get("/timeline/").content.decode()
    assert f'href="/rollouts/{rollout.pk}/"' in page and 'href="/routes/#route:chat"' in page
    assert 'id="route:chat"' in client.get("/routes/").content.decode()  # where the route link lands


def test_the_events_api_filters_by_actor_too(history, viewer_api):
    found = viewer_api.get("/api/v1/events?actor=bob").json()
    assert [e["message"] for e in found["results"]] == ["chat: canary 20→30, stable 80→70"]
