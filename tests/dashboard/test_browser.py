"""The dashboard in a real browser: Daphne serves dashboard.asgi.application on
loopback, the simulator is the provider, Chromium is driven by Playwright.

Runs only where /usr/bin/chromium exists (scripts/install-chromium.sh); under
CI=true a missing Chromium fails instead of skipping.
"""

import math
import os
import random
import re
import threading
import time
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from django.conf import settings
from django.db import connections

from tests.conftest import IN_CI

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SCREENSHOTS = Path(settings.BASE_DIR) / "docs" / "screenshots"
VIEWPORT = {"width": 1280, "height": 800}
PASSWORD = "correct-horse-battery"  # the shared fixtures' password


class DaphneThread:
    """Daphne serving an ASGI app on a free loopback port from a background thread.

    Twisted's reactor runs once per process, so start this once per test session.
    """

    def __init__(self, application):
        from daphne.server import Server

        self.server = Server(application=application, endpoints=["tcp:port=0:interface=127.0.0.1"],
                             signal_handlers=False, verbosity=0)
        self.thread = threading.Thread(target=self.server.run, name="daphne-test", daemon=True)

    def start(self, timeout=10.0):
        """Start serving and return the base URL once the port is bound."""
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.listening_addresses:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("Daphne did not start")
            time.sleep(0.02)
        host, port = self.server.listening_addresses[0]
        return f"http://{host}:{port}"

    def stop(self):
        from twisted.internet import reactor

        reactor.callFromThread(reactor.stop)
        self.thread.join(timeout=5)


@pytest.fixture(scope="module")
def chromium():
    if not os.path.exists(CHROMIUM):
        message = f"{CHROMIUM} is missing; run scripts/install-chromium.sh"
        if IN_CI:
            pytest.fail(f"{message} (CI=true requires the browser tests).")
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop set on this thread, which makes
    # Django refuse ORM calls here; the test's own DB work is plain sync code.
    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def app_url(chromium):
    """Daphne serving the real ASGI app (pages, API, WebSockets) in this process,
    so the in-memory channel layer and the test database are shared with the test."""
    from dashboard.asgi import application

    server = DaphneThread(application)
    yield server.start()
    server.stop()


@pytest.fixture
def shared_db(transactional_db, monkeypatch):
    """Let every server thread use this test's in-memory SQLite connection.

    Django's own live server does the same: separate connections to a shared
    in-memory database fail with "table is locked" when they overlap.
    """
    connection = connections["default"]
    if connection.vendor != "sqlite" or not connection.is_in_memory_db():
        yield
        return
    connection.inc_thread_sharing()
    monkeypatch.setattr(connections, "_connections", SimpleNamespace(default=connection))
    yield
    connection.dec_thread_sharing()


@pytest.fixture
def simulator():
    from routing.simulator import SimulatorServer

    with SimulatorServer(seed=7) as server:
        yield server


@pytest.fixture
def world(shared_db, simulator, admin_user, viewer_user):
    """Provider on the simulator, deployments "stable" and "canary", route "chat" at 90/10."""
    from probes.models import ProbeTarget
    from routing import weights
    from tests.factories import canary_world

    made = canary_world(simulator.base_url, (100, 0), "sk-browser-test-secret-0001", provider_name="simulator",
                        description="The chat model every app asks for")
    route, stable, canary = made.route, made.stable, made.canary
    weights.apply_weights(route, {"stable": 90, "canary": 10}, reason="start the canary", actor="alice",
                          user=admin_user)
    seed_history([(stable, 18, 40.0, 0.0), (canary, 2, 55.0, 0.08)], route=route)
    ProbeTarget.objects.filter(deployment=canary).update(health="degraded",
                                                         health_reason="error rate 8% over the last probes")
    return SimpleNamespace(route=route, probe=ProbeTarget.objects.get(deployment=stable, api_key=None))


def seed_history(deployments, minutes=30, route=None):
    """Roll up half an hour of traffic (through `route`) and probes: (deployment, requests/min, median ms, error
    rate)."""
    from django.utils import timezone

    from probes.rollups import Aggregator, save_deltas

    rng = random.Random(5)
    now = timezone.now()
    for source, share in (("traffic", 1), ("probe", 0)):
        aggregator = Aggregator(source)
        for minute, (deployment, per_minute, median, errors) in (
            (m, d) for m in range(minutes, 0, -1) for d in deployments
        ):
            for _ in range(per_minute * share or 2):
                latency = rng.lognormvariate(math.log(median), 0.35)
                failed = rng.random() < errors
                aggregator.add(deployment.pk, when=now - timedelta(minutes=minute),
                               outcome="server_error" if failed else "ok",
                               route_id=route.pk if route is not None and source == "traffic" else None,
                               latency_ms=None if failed else latency, ttft_ms=None if failed else latency / 2,
                               tps=180.0)
        save_deltas(aggregator.drain())


def probe(target):
    """Run one real probe against the simulator (it stores, rolls up and publishes live)."""
    from probes.runner import run_probe

    result = run_probe(target.pk)
    assert result is not None and result.outcome == "ok", result and result.error


def signed_in_page(chromium, app_url, username, path):
    context = chromium.new_context(viewport=VIEWPORT, base_url=app_url)
    page = context.new_page()
    page.goto("/login/?next=" + path)
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(app_url + path.split("?")[0] + "*")
    page.wait_for_selector("#live-status[data-state=live]")
    return page


def screenshot(page, name):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


def test_the_overview_sparkline_takes_new_probe_points_without_a_reload(chromium, app_url, world):
    page = signed_in_page(chromium, app_url, "victor", "/")
    tile = page.locator('.tile[data-deployment="stable"]')
    before = int(tile.get_attribute("data-points") or 0)
    probe(world.probe)
    page.wait_for_function(
        "n => Number(document.querySelector('.tile[data-deployment=\"stable\"]').dataset.points) > n", arg=before,
        timeout=10_000,
    )
    assert tile.locator("[data-field=state]").inner_text() in ("Up", "Unknown")
    probe(world.probe)
    page.wait_for_timeout(300)
    screenshot(page, "overview")
    page.context.close()


def test_the_deployment_charts_take_new_points_without_a_reload(chromium, app_url, world):
    probe(world.probe)
    page = signed_in_page(chromium, app_url, "victor", "/deployments/stable/?window=15m")
    count = "() => Chart.getChart('chart-latency').data.datasets[3].data.length"
    assert page.evaluate(count) == 1  # the probe stored before the page opened
    probe(world.probe)
    # Predicates are functions, not expressions: the page's Content-Security-Policy forbids eval.
    page.wait_for_function(f"() => ({count})() >= 2", timeout=10_000)
    page.wait_for_function("() => Chart.getChart('chart-latency').data.datasets[0].data.length >= 1", timeout=10_000)
    assert page.locator("#probe-rows tr").count() >= 2
    page.click("#windows a[data-window='1h']")
    page.wait_for_url("**window=1h")
    assert page.evaluate(count) >= 2  # switching the window keeps the points
    screenshot(page, "deployment")
    page.context.close()


def test_chart_axes_at_small_values_never_repeat_a_label(chromium, app_url, world):
    page = signed_in_page(chromium, app_url, "victor", "/deployments/canary/?window=1h")  # ~0.03 requests/s
    page.wait_for_function("() => Chart.getChart('chart-rps').data.datasets[0].data.length > 0", timeout=10_000)
    labels = page.evaluate("""() => Object.fromEntries(['chart-latency', 'chart-ttft', 'chart-errors', 'chart-rps']
        .map((id) => [id, Chart.getChart(id).scales.y.ticks.map((t) => t.label)]))""")
    for chart, ticks in labels.items():
        assert len(ticks) >= 3 and len(set(ticks)) == len(ticks), f"{chart} repeats a label: {ticks}"
    assert labels["chart-rps"][0] == "0/s" and labels["chart-rps"][1] in ("0.005/s", "0.01/s")
    assert labels["chart-latency"][0] == "0 ms" and labels["chart-errors"][0] == "0 %"
    assert page.locator("#probe-rows").inner_text() == "No probe results yet."  # the empty state survives the refresh
    page.context.close()


def test_moving_the_canary_reaches_the_api_the_audit_trail_and_other_browsers(chromium, app_url, world, admin_api):
    from routing.models import AuditAction, AuditEvent

    admin = signed_in_page(chromium, app_url, "alice", "/routes/")
    viewer = signed_in_page(chromium, app_url, "victor", "/routes/")
    canary_slider = admin.locator('.weight-row[data-deployment="canary"] input[type=range]')
    canary_slider.focus()
    for _ in range(15):
        canary_slider.press("ArrowRight")  # the slider works from the keyboard
    assert admin.locator('.weight-row[data-deployment="stable"] .weight-number').input_value() == "75"
    admin.fill("input[name=reason]", "canary error rate is flat")
    admin.click("button.apply")

    viewer.wait_for_function(
        "() => document.querySelector('tr[data-deployment=\"canary\"] [data-field=weight] .num').textContent === '25%'",
        timeout=1000,
    )
    assert viewer.locator('.weight-row[data-deployment="canary"] .weight-number').input_value() == "25"
    admin.wait_for_selector(".form-ok:has-text('Applied')")

    route = admin_api.get("/api/v1/routes/chat/").json()
    assert {t["deployment"]: t["weight"] for t in route["targets"]} == {"stable": 75, "canary": 25}
    change = AuditEvent.objects.filter(action=AuditAction.WEIGHTS).first()
    assert (change.actor, change.reason) == ("alice", "canary error rate is flat")
    assert change.after["weights"] == {"stable": 75, "canary": 25}
    admin.wait_for_selector("[data-field=history] tr:has-text('canary 10→25%')")
    screenshot(admin, "routes")
    admin.context.close()
    viewer.context.close()


def test_a_viewer_cannot_change_the_split(chromium, app_url, world, admin_api):
    viewer = signed_in_page(chromium, app_url, "victor", "/routes/")
    assert viewer.locator('.weight-row[data-deployment="canary"] input[type=range]').is_disabled()
    assert viewer.locator("button.apply").is_disabled()
    answer = viewer.evaluate("""async () => {
        const r = await fetch('/api/v1/routes/chat/weights', {method: 'PUT', credentials: 'same-origin',
            headers: {'Content-Type': 'application/json', 'X-CSRFToken': Weathervane.csrfToken()},
            body: JSON.stringify({weights: {stable: 50, canary: 50}, reason: 'sneaky'})});
        return [r.status, await r.text()];
    }""")
    assert answer[0] == 403 and "Only staff can change" in answer[1]
    route = admin_api.get("/api/v1/routes/chat/").json()
    assert {t["deployment"]: t["weight"] for t in route["targets"]} == {"stable": 90, "canary": 10}
    viewer.context.close()


def test_the_api_rejection_is_shown_inline_and_changes_nothing(chromium, app_url, world, admin_api):
    admin = signed_in_page(chromium, app_url, "alice", "/routes/")
    # The refresh the page makes once its socket is live resets an untouched form: let it land first.
    admin.wait_for_load_state("networkidle")
    # Two sliders always add up to 100, so set an invalid total the way a hand-edited form would.
    admin.evaluate("""() => document.querySelectorAll('.weight-number').forEach((input) => { input.value = '30'; })""")
    admin.fill("input[name=reason]", "typo")
    admin.click("button.apply")
    admin.wait_for_selector(".form-error:has-text('Weights must add up to exactly 100, not 60.')", timeout=10_000)
    route = admin_api.get("/api/v1/routes/chat/").json()
    assert {t["deployment"]: t["weight"] for t in route["targets"]} == {"stable": 90, "canary": 10}
    admin.context.close()


def test_the_timeline_shows_new_events_without_a_reload(chromium, app_url, world):
    from routing import weights

    page = signed_in_page(chromium, app_url, "victor", "/timeline/")
    assert "canary 0→10" in page.locator("#timeline li").first.inner_text()
    weights.apply_weights(world.route, {"stable": 50, "canary": 50}, reason="half and half", actor="alice")
    page.wait_for_selector("#timeline li:first-child:has-text('canary 10→50')", timeout=5000)
    assert page.locator("#timeline li").count() == 2
    page.context.close()


def test_logging_out_closes_the_live_pages_of_that_browser(chromium, app_url, world):
    page = signed_in_page(chromium, app_url, "alice", "/routes/")
    other = page.context.new_page()
    other.goto("/deployments/stable/")
    other.wait_for_selector("#live-status[data-state=live]")
    page.click(".logout button")
    page.wait_for_url(re.compile(r"/login/"))
    # The other tab's socket was closed; it found the session gone and shows the login form.
    other.wait_for_url(re.compile(r"/login/\?next=/deployments/stable/"), timeout=5000)
    page.context.close()


def test_drain_moves_a_targets_weight_to_the_others_and_revert_restores_it(chromium, app_url, world, admin_api):
    def split():
        route = admin_api.get("/api/v1/routes/chat/").json()
        return {t["deployment"]: t["weight"] for t in route["targets"]}

    admin = signed_in_page(chromium, app_url, "alice", "/routes/")
    drained = admin.evaluate("WeathervaneRoutes.drained({a: 7, b: 2, c: 91}, 'c', () => true)")
    assert drained == {"a": 78, "b": 22, "c": 0}
    admin.click('button.drain[data-deployment="canary"]')  # no reason yet: nothing is sent
    admin.wait_for_timeout(300)
    assert split() == {"stable": 90, "canary": 10}
    admin.fill("input[name=reason]", "canary 5xx spike")
    admin.click('button.drain[data-deployment="canary"]')
    admin.wait_for_selector(".form-ok:has-text('Applied')")
    assert split() == {"stable": 100, "canary": 0}
    admin.fill("input[name=reason]", "false alarm")
    admin.click("button.revert")
    admin.wait_for_selector(".form-ok:has-text('now version 4')")
    assert split() == {"stable": 90, "canary": 10}
    assert admin.locator('.weight-row[data-deployment="canary"] .weight-number').input_value() == "10"
    admin.context.close()


def test_an_edit_of_a_split_changed_meanwhile_is_refused_and_the_form_catches_up(chromium, app_url, world, admin_api):
    from routing import weights

    admin = signed_in_page(chromium, app_url, "alice", "/routes/")
    admin.locator('.weight-row[data-deployment="canary"] input[type=range]').press("ArrowRight")  # an edit: 11%
    weights.apply_weights(world.route, {"stable": 80, "canary": 20}, reason="from a script", actor="bob")
    admin.wait_for_selector('tr[data-deployment="canary"] [data-field=weight] .num:text-is("20%")', timeout=5000)
    canary_number = admin.locator('.weight-row[data-deployment="canary"] .weight-number')
    assert canary_number.input_value() == "11"  # the user's unsaved edit is not overwritten
    admin.fill("input[name=reason]", "my edit")
    admin.click("button.apply")
    admin.wait_for_selector(".form-error:has-text('changed meanwhile')")
    assert canary_number.input_value() == "20"
    route = admin_api.get("/api/v1/routes/chat/").json()
    assert {t["deployment"]: t["weight"] for t in route["targets"]} == {"stable": 80, "canary": 20}
    admin.context.close()


def test_the_fallback_chain_is_edited_from_the_keyboard_on_the_routes_page_and_every_page_follows(
        chromium, app_url, world, admin_api):
    from routing import weights
    from routing.models import AuditEvent, Deployment

    provider = Deployment.objects.get(name="stable").provider
    for name in ("spare", "backup"):
        Deployment.objects.create(name=name, provider=provider, upstream_model="fast")
    admin = signed_in_page(chromium, app_url, "alice", "/routes/")
    viewer = signed_in_page(chromium, app_url, "victor", "/routes/")
    assert viewer.locator("form.fallback-form").count() == 0  # viewers see the chain, no editor
    admin.locator('.weight-row[data-deployment="canary"] input[type=range]').press("ArrowRight")  # a pending split edit
    editor = admin.locator("form.fallback-form")
    for name in ("spare", "backup", "canary"):
        editor.locator(".fallback-choice").select_option(name)
        editor.locator("button.add").press("Enter")
    editor.locator("input[name=reason]").fill("spares for outages")
    editor.locator("input[name=reason]").press("Enter")
    editor.locator(".form-error:has-text('fallbacks.canary')").wait_for(timeout=10_000)  # canary has weight 10
    assert "weight 10" in editor.locator(".form-error").inner_text()
    assert admin_api.get("/api/v1/routes/chat/").json()["fallbacks"] == []

    editor.locator('li[data-deployment="canary"] .remove').press("Enter")
    editor.locator('li[data-deployment="backup"] .move-up').press("Enter")
    assert admin.evaluate("() => document.activeElement.getAttribute('aria-label')") == "Move backup up"
    editor.locator("button.apply").press("Enter")
    editor.locator(".form-ok:has-text('Applied')").wait_for(timeout=10_000)

    assert admin_api.get("/api/v1/routes/chat/").json()["fallbacks"] == ["backup", "spare"]
    assert AuditEvent.objects.filter(action="weights").first().after["fallbacks"] == ["backup", "spare"]
    chain = "() => [...document.querySelectorAll('.fallback-chain li')].map((li) => li.dataset.deployment).join(',')"
    viewer.wait_for_function(f"() => ({chain})() === 'backup,spare'", timeout=5000)  # live, without a reload
    viewer.wait_for_selector("[data-field=history] tr:has-text('fallbacks none ⇒ backup → spare')", timeout=5000)

    weights.apply_weights(world.route, None, fallbacks=["spare"], reason="from a script", actor="bob")
    admin.wait_for_function(f"() => ({chain})() === 'spare'", timeout=5000)
    assert editor.locator(".fallback-edit li").evaluate_all("items => items.map((li) => li.dataset.deployment)") == [
        "spare"]  # the untouched editor follows the change made elsewhere
    split_form = admin.locator("form.split-form")
    split_form.locator("input[name=reason]").fill("a little more canary")
    split_form.locator("button.apply").press("Enter")
    split_form.locator(".form-ok:has-text('Applied')").wait_for(timeout=10_000)  # chain changes left the edit valid
    assert admin_api.get("/api/v1/routes/chat/").json()["fallbacks"] == ["spare"]
    assert {t["deployment"]: t["weight"] for t in admin_api.get("/api/v1/routes/chat/").json()["targets"]} == {
        "stable": 89, "canary": 11}
    admin.context.close()
    viewer.context.close()


def test_a_small_load_test_started_from_the_dashboard_shows_its_progress_and_then_its_figures(chromium, app_url, world):
    page = signed_in_page(chromium, app_url, "alice", "/load-tests/")
    page.select_option("#lt-target", "deployment:stable")
    page.fill("#lt-concurrency", "1")
    page.fill("#lt-requests", "25")
    page.fill("#lt-max-tokens", "40")
    page.fill("#lt-thresholds", "error_rate < 1%")
    page.click("#lt-estimate")
    page.wait_for_selector("#lt-confirm:not([hidden])")
    assert page.locator("#lt-cost").inner_text().startswith("$")
    page.click("#lt-start")
    page.wait_for_url(re.compile(r".*/load-tests/\d+/$"))
    page.wait_for_selector("#live-status[data-state=live]")
    # progress moves while it runs (the live socket), before the figures replace it
    page.wait_for_function("() => Number(document.getElementById('lt-done')?.textContent || 0) > 0 || "
                           "document.getElementById('lt-verdict') !== null", timeout=15_000)
    page.wait_for_selector("#lt-verdict", timeout=30_000)
    assert "Finished" in page.locator("#lt-verdict").inner_text()
    assert "thresholds passed" in page.locator("#lt-verdict").inner_text()
    assert "25 (25 ok)" in page.locator(".lt-summary").inner_text()
    page.wait_for_timeout(300)
    screenshot(page, "load-test")
    page.context.close()


def test_a_running_load_test_shows_live_progress_and_stops_from_its_page(chromium, app_url, world):
    from probes.loadtest.models import LoadTestRun

    page = signed_in_page(chromium, app_url, "alice", "/load-tests/")
    page.select_option("#lt-target", "deployment:stable")
    page.select_option("#lt-profile", "constant")
    page.fill("#lt-rate", "4")
    page.fill("#lt-requests", "1000")
    page.click("#lt-estimate")
    page.click("#lt-start")
    page.wait_for_url(re.compile(r".*/load-tests/\d+/$"))
    page.wait_for_function("() => Number(document.getElementById('lt-done').textContent) >= 3", timeout=15_000)
    page.click("#lt-stop")
    page.wait_for_selector("#lt-verdict", timeout=15_000)
    assert "Stopped" in page.locator("#lt-verdict").inner_text()
    assert LoadTestRun.objects.get().status == "stopped"
    page.context.close()


def test_a_proposed_split_shows_its_projected_effect_before_it_is_applied(chromium, app_url, world, admin_api):
    page = signed_in_page(chromium, app_url, "alice", "/routes/")
    slider = page.locator('.weight-row[data-deployment="canary"] input[type=range]')
    slider.focus()
    for _ in range(40):
        slider.press("ArrowRight")  # 10% -> 50% on the canary, whose recent error rate is 8%
    table = page.locator("table.projection")
    table.wait_for(state="visible", timeout=5_000)
    page.wait_for_function("() => document.querySelector("
                           "'table.projection [data-row=error_rate] [data-field=proposed]')"
                           ".textContent.includes('%')")
    today = float(table.locator("[data-row=error_rate] [data-field=current]").inner_text().split()[0])
    proposed = float(table.locator("[data-row=error_rate] [data-field=proposed]").inner_text().split()[0])
    assert proposed > today  # more of the erring canary: a higher projected error rate
    assert table.locator("[data-row=spend_per_day] [data-field=proposed]").inner_text().startswith("$")
    assert int(table.locator("[data-field=volume]").inner_text()) > 0
    route = admin_api.get("/api/v1/routes/chat/").json()
    assert {t["deployment"]: t["weight"] for t in route["targets"]} == {"stable": 90, "canary": 10}  # nothing applied


def test_no_page_breaks_the_content_security_policy(chromium, app_url, world):
    from routing.rollouts.models import Rollout

    rollout = Rollout.objects.create(route=world.route, canary=world.route.targets.get(deployment__name="canary")
                                     .deployment, plan=[{"weight": 50}], guards=[{"metric": "errors", "allowed": 0.01}])
    page = signed_in_page(chromium, app_url, "alice", "/routes/")
    violations = []
    page.on("console",
            lambda message: violations.append(message.text) if "Content Security Policy" in message.text else None)
    for path in ("/", "/routes/", "/deployments/stable/", "/timeline/", "/rollouts/", f"/rollouts/{rollout.pk}/",
                 "/rollouts/new/?route=chat", "/alerts/", "/alerts/channels/new/", "/alerts/rules/new/",
                 "/alerts/policies/new/", "/admin/", "/api/docs/"):
        page.goto(path)
        page.wait_for_load_state("networkidle")
    page.goto("/routes/")
    width = "getComputedStyle(document.querySelector('tr[data-deployment=\"canary\"] .bar')).getPropertyValue('--w')"
    assert page.evaluate(width).strip() == "10%"  # set by the page's script, not an inline style
    assert violations == []
    page.context.close()


# --- a staged rollout, watched end to end ----------------------------------------------------

STEADY = {"latency_median_ms": 10, "latency_p99_ms": 20}  # the demo's baseline, fast (a busy machine's noise is more)
DEGRADE_AT_S = 1000.0  # simulated seconds: the canary slows down when the test moves the clock past this


class SteppedClock:
    """The simulator's clock for model schedules: moved by the test, not by the wall."""

    now = 0.0

    def __call__(self):
        return self.now


@pytest.fixture
def demo_rollout(shared_db, settings, admin_user, viewer_user, serve_gateway):
    """The demo as seeded, against a simulator whose tail-gpt model behaves like the baseline until the test
    moves its clock, then waits 30x longer before its first byte (far above a busy machine's own noise); a
    gateway, client traffic (every other request streamed, as the demo's own) and the embedded scheduler
    ticking twice a second."""
    from io import StringIO

    from django.core.management import call_command

    from probes.scheduler import Scheduler
    from routing.rollouts.models import Rollout
    from routing.simulator import Change, Personality, Simulator, SimulatorServer
    from tests.routing.gateway.helpers import client_key, post_chat

    settings.ALLOW_PRIVATE_UPSTREAMS = True
    clock = SteppedClock()
    models = {"steady": Personality(**STEADY),
              "heavy-tailed": Personality(**STEADY,
                                          schedule=[Change(after_s=DEGRADE_AT_S, latency_scale=30)])}
    with SimulatorServer(Simulator(models=models, seed=7, clock=clock)) as server:
        call_command("seed_demo", simulator_url=server.base_url, stdout=StringIO())
        rollout = Rollout.objects.get()
        Rollout.objects.filter(pk=rollout.pk).update(min_canary_requests=60, preflight_probes=2)
        gateway = serve_gateway(log_sample=0.0)
        key = client_key()
        stop = threading.Event()

        def send():
            stream = False
            while not stop.is_set():
                post_chat(gateway, key, "gpt-demo", stream=stream, max_tokens=4)
                stream = not stream

        senders = [threading.Thread(target=send, daemon=True) for _ in range(6)]
        for sender in senders:
            sender.start()
        scheduler = Scheduler(threads=2, refresh_s=0.5).start()
        yield SimpleNamespace(rollout=rollout, clock=clock, simulator_url=server.base_url.removesuffix("/v1"))
        scheduler.stop()
        stop.set()
        for sender in senders:
            sender.join(timeout=10)


CHART_DATA = """() => ['chart-latency', 'chart-ttft', 'chart-errors', 'chart-share'].map((id) =>
    Chart.getChart(id).data.datasets.map((set) => [set.label, set.data.length, set.data.map((p) => p.y).join()]))"""


def _charts_move_live_for_both_arms(page):
    """The detail page's charts take new traffic over the socket, without a reload, on the same x axis."""
    page.wait_for_load_state("networkidle")
    page.evaluate("() => { window.notReloaded = true; }")
    before = page.evaluate(CHART_DATA)
    page.wait_for_function(f"(before) => JSON.stringify(({CHART_DATA})()) !== JSON.stringify(before)", arg=before,
                           timeout=20_000)
    assert page.evaluate("() => window.notReloaded") is True
    latency = {label: points for label, points, _ in page.evaluate(CHART_DATA)[0]}
    assert latency["baseline p95"] > 0 and latency["canary p95"] > 0
    axes = page.evaluate("""() => ['chart-latency', 'chart-share'].map((id) => {
        const x = Chart.getChart(id).options.scales.x; return [x.min, x.max]; })""")
    assert axes[0] == axes[1] and axes[0][1] - axes[0][0] == 30 * 60 * 1000


def _routes_weight(page, deployment):
    return page.locator(f'tr[data-deployment="{deployment}"] [data-field=weight] .num')


@pytest.mark.timeout(600)
def test_the_seeded_demo_rollout_rolls_back_by_itself_every_browser_sees_it_and_a_fixed_canary_promotes(
        chromium, app_url, demo_rollout):
    from routing.models import Route
    from routing.rollouts.models import Rollout

    rollout, path = demo_rollout.rollout, f"/rollouts/{demo_rollout.rollout.pk}/"
    admin = signed_in_page(chromium, app_url, "alice", path)
    viewer_routes = signed_in_page(chromium, app_url, "victor", "/routes/")
    viewer_routes.evaluate("() => { window.notReloaded = true; }")
    viewer = viewer_routes.context.new_page()
    viewer.goto(path)
    viewer.wait_for_selector("#live-status[data-state=live]")
    assert viewer.locator("form.gate, form.gate button").count() == 0
    assert "only staff can press" in viewer.locator("section[aria-labelledby=gates-title]").inner_text()

    # Started from the keyboard: type the reason, Tab to the button, Enter.
    admin.locator("#reason-start").fill("rehearse tail-gpt")
    admin.keyboard.press("Tab")
    admin.keyboard.press("Enter")
    admin.wait_for_selector("#rollout-state:text-is('running')", timeout=30_000)  # preflight passed
    _routes_weight(viewer_routes, "tail-gpt").filter(has_text="25%").wait_for(timeout=10_000)

    # A viewer sees the running rollout but no gate, and a hand-made POST is refused and changes nothing.
    viewer.wait_for_selector("#rollout-state:text-is('running')", timeout=10_000)
    assert viewer.locator("form.gate").count() == 0
    _charts_move_live_for_both_arms(viewer)
    answers = viewer.evaluate("""async (id) => {
        const post = (url, body, type) => fetch(url, {method: 'POST', credentials: 'same-origin',
            headers: {'Content-Type': type, 'X-CSRFToken': Weathervane.csrfToken()}, body});
        const page = await post(`/rollouts/${id}/abort/`, 'reason=sneaky', 'application/x-www-form-urlencoded');
        const api = await post(`/api/v1/rollouts/${id}/abort`, JSON.stringify({reason: 'sneaky'}), 'application/json');
        return [page.status, api.status];
    }""", rollout.pk)
    assert answers == [403, 403]
    assert Rollout.objects.get(pk=rollout.pk).state == "running"

    # tail-gpt slows down mid-step, in its first byte; a rollback needs more than one minute's evidence (the
    # rollups' minutes are the wall clock's), so this takes one to three minutes.
    demo_rollout.clock.now = DEGRADE_AT_S
    admin.wait_for_selector("#rollout-state:text-is('rolled_back')", timeout=240_000)
    explanation = admin.locator("#verdicts li.verdict-fail").first.inner_text()
    assert "p95 time to first token: median" in explanation and explanation.endswith("rolling back")
    assert "clearly beyond +25 %" in explanation
    assert "rolling back" in admin.locator("#transitions").inner_text()

    # The other browser saw the split restored live: the canary drained, the baseline's proportion back.
    _routes_weight(viewer_routes, "tail-gpt").filter(has_text="0%").wait_for(timeout=10_000)
    assert _routes_weight(viewer_routes, "steady-gpt").inner_text() == "100%"
    assert viewer_routes.evaluate("() => window.notReloaded") is True
    assert Route.objects.get(name="gpt-demo").weights() == {"steady-gpt": 100, "tail-gpt": 0, "flaky-gpt": 0}

    # The README's promote flow: the simulated model made to behave like the baseline (here the fixture's own
    # baseline personality; the README names the built-in it copies), then Retry; the steps pass on their own
    # traffic up to the pause, a human approves, and tail-gpt is promoted.
    answer = httpx.put(f"{demo_rollout.simulator_url}/_sim/models/heavy-tailed", json=STEADY)
    assert answer.status_code == 200, answer.text
    admin.reload()
    admin.locator("#reason-retry").fill("tail fixed")
    admin.locator("button[data-gate=retry]").click()
    try:
        admin.wait_for_selector("#rollout-state:text-is('awaiting_approval')", timeout=300_000)
    except Exception:
        last = Rollout.objects.get(pk=rollout.pk).verdicts.first()
        pytest.fail(f"not awaiting approval: {last} {last and last.sentence}\n"
                    f"{admin.locator('#transitions').inner_text()}")
    passed = admin.locator("#transitions").inner_text()
    assert "step 1 (25%) passed" in passed and "step 2 (50%) passed" in passed
    admin.reload()
    admin.locator("#reason-approve").fill("numbers look right")
    admin.locator("button[data-gate=approve]").click()
    admin.wait_for_selector("#rollout-state:text-is('promoted')", timeout=60_000)
    _routes_weight(viewer_routes, "tail-gpt").filter(has_text="100%").wait_for(timeout=10_000)
    assert Route.objects.get(name="gpt-demo").weights() == {"steady-gpt": 0, "tail-gpt": 100, "flaky-gpt": 0}
    admin.context.close()
    viewer.context.close()


class TickingScheduler:
    """The embedded scheduler as `serve` runs it, reduced to what a page asks of it: an alert tick on a thread of
    its own (never the web request's), after which the page hears alerts.changed and reloads."""

    running = True

    def alerts_due_now(self):
        from django.db import close_old_connections

        from dashboard.alerts import engine

        def tick():
            try:
                engine.tick()
            finally:
                close_old_connections()

        threading.Thread(target=tick, name="probe-scheduler").start()


def test_a_silence_created_on_the_alerts_page_quiets_a_firing_alert(chromium, app_url, world, settings,
                                                                    monkeypatch):
    from unittest import mock

    from dashboard.alerts import engine
    from dashboard.alerts.models import Alert, AlertRule
    from probes import scheduler
    from probes.models import ProbeTarget

    settings.PROBES_IN_PROCESS = True
    monkeypatch.setattr(scheduler, "_scheduler", TickingScheduler())

    AlertRule.objects.create(name="deployment down", kind="deployment_health", params={"states": ["down"]},
                             severity="critical")
    ProbeTarget.objects.filter(deployment__name="canary").update(health="down", health_reason="3 failures")
    with mock.patch("dashboard.alerts.delivery.enqueue"):
        engine.tick()
        page = signed_in_page(chromium, app_url, "alice", "/alerts/")
        firing = page.locator("table.alerts[data-group=firing] tbody tr").first
        assert "canary is down: 3 failures" in firing.inner_text()
        assert page.locator("#nav-alerts-firing").inner_text() == "1"
        firing.get_by_role("link", name="Silence…").click()
        page.wait_for_selector("#silence-matchers[value*=canary]")
        page.fill("#silence-reason", "known: the canary is being replaced")
        page.click("#silence-form button[type=submit]")
        page.wait_for_selector("table.alerts[data-group=firing] tr.quiet:has-text('silenced')", timeout=10000)
        assert page.locator("#nav-alerts-firing").inner_text() == "0"
        assert "known: the canary is being replaced" in page.locator("table.silences").inner_text()
        assert Alert.objects.get().suppressed == "silenced"
    page.context.close()


def test_staff_draft_a_rollout_from_the_keyboard_and_see_it_listed_while_viewers_see_no_controls(
        chromium, app_url, world):
    from routing import weights
    from routing.rollouts.models import Rollout

    weights.apply_weights(world.route, {"stable": 100, "canary": 0}, reason="canary drained", actor="alice")
    admin = signed_in_page(chromium, app_url, "alice", "/routes/")
    admin.focus("a.new-rollout")
    admin.keyboard.press("Enter")
    admin.wait_for_url("**/rollouts/new/?route=chat")
    assert admin.locator("#id_route").input_value() == "chat"
    assert admin.locator("#id_canary").input_value() == "canary"  # the route's lightest target
    admin.focus("#id_plan_template")
    admin.keyboard.press("ArrowDown")  # careful → quick: the step rows follow
    assert admin.locator("[name=step-0-weight]").input_value() == "10"
    assert admin.locator("[name=step-2-weight]").input_value() == "100"
    assert admin.locator("[name=step-3-weight]").input_value() == ""
    # The time-to-decision preview of the form as it stands (the API's dry run): each step's line, slow ones flagged.
    first = admin.locator('.step-row[data-row="0"] .step-forecast')
    first.filter(has_text="req/s to the canary").wait_for(timeout=10_000)
    assert "cannot decide within its step timeout" in first.inner_text()
    assert "slow" in admin.locator('.step-row[data-row="0"]').get_attribute("class").split()
    promotion = admin.locator('.step-row[data-row="2"] .step-forecast')
    promotion.filter(has_text="the promotion: nothing left to compare").wait_for(timeout=10_000)
    assert "cannot decide within the step timeout" in admin.locator("#forecast-summary").inner_text()
    admin.focus("[name=guard-errors-allowed]")
    admin.keyboard.press("Control+A")
    admin.keyboard.type("1")
    admin.keyboard.press("Enter")  # submits the form
    admin.wait_for_url(re.compile(r".*/rollouts/\d+/$"))
    rollout = Rollout.objects.get()
    assert admin.locator("#rollout-state").inner_text() == "draft"
    assert [s["weight"] for s in rollout.plan] == [10, 50, 100]
    assert rollout.guards[0] == {"metric": "errors", "allowed": 0.01, "limit": None}
    admin.goto("/rollouts/")
    assert admin.locator(f'table[data-group=recent] tr[data-rollout="{rollout.pk}"]').inner_text().split("\t")[:3] == [
        f"#{rollout.pk}", "chat", "canary"]
    admin.context.close()

    viewer = signed_in_page(chromium, app_url, "victor", "/rollouts/")
    assert viewer.locator("#new-rollout").count() == 0
    viewer.goto("/routes/")
    assert viewer.locator("a.new-rollout").count() == 0
    assert viewer.goto("/rollouts/new/").status == 403
    viewer.goto(f"/rollouts/{rollout.pk}/")
    assert viewer.locator("form.gate").count() == 0
    viewer.context.close()


def test_an_open_routes_page_disables_the_sliders_when_a_rollout_takes_the_wheel_and_enables_them_on_pause(
        chromium, app_url, world):
    from routing.rollouts import controller
    from routing.rollouts.models import Rollout, RolloutState

    rollout = Rollout.objects.create(route=world.route, canary=world.route.targets.get(deployment__name="canary")
                                     .deployment, plan=[{"weight": 50}], guards=[{"metric": "errors", "allowed": 0.01}],
                                     state=RolloutState.AWAITING_APPROVAL, baseline={"stable": 90, "canary": 10})
    controller.gate(rollout.pk, "pause", reason="hands on", actor="alice")
    admin = signed_in_page(chromium, app_url, "alice", "/routes/")
    slider = '.weight-row[data-deployment="canary"] input[type=range]'
    assert admin.locator(slider).is_enabled()
    admin.evaluate("() => { window.notReloaded = true; }")
    controller.gate(rollout.pk, "resume", reason="carry on", actor="alice")  # running again: it holds the wheel
    admin.wait_for_selector(f".rollout-link.banner:has-text('rollout #{rollout.pk} of canary (running) is driving "
                            "this route; pause it to take the wheel.')", timeout=15_000)
    assert admin.locator(slider).is_disabled() and admin.locator("form.split-form button.apply").is_disabled()
    controller.gate(rollout.pk, "pause", reason="my turn", actor="alice")
    admin.wait_for_selector(".rollout-link:has-text('is paused: the split is yours to change')", timeout=15_000)
    assert admin.locator(slider).is_enabled()
    assert admin.evaluate("() => window.notReloaded") is True  # followed live, nothing typed is lost
    admin.context.close()


def _tick(now=None):
    """Run one alert tick here, waiting out one that a page's change started on the scheduler's thread."""
    from dashboard.alerts import engine

    _wait_for(lambda: engine.tick(now) is not None)


def _wait_for(condition, timeout=15.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.1)


def test_staff_set_up_a_webhook_a_rule_and_a_policy_on_the_alerts_page_and_a_silence_there_is_honoured(
        chromium, app_url, world, settings, monkeypatch):
    import json

    from django.utils import timezone

    from dashboard.alerts import delivery
    from dashboard.alerts.models import Alert, AlertRule, Channel, NotificationPolicy
    from probes import scheduler
    from probes.models import ProbeTarget
    from tests.dashboard.alerts.receivers import Receiver

    settings.PROBES_IN_PROCESS = settings.ALERT_DELIVERY_IN_PROCESS = True
    settings.ALLOW_PRIVATE_UPSTREAMS = True  # the receiver listens on 127.0.0.1
    settings.PUBLIC_URL = app_url
    monkeypatch.setattr(scheduler, "_scheduler", TickingScheduler())
    with Receiver(200) as hook:
        admin = signed_in_page(chromium, app_url, "alice", "/alerts/")
        admin.click("#new-channel")
        admin.fill("#id_name", "ops hook")
        admin.select_option("#id_kind", "webhook")
        admin.fill("#id_target", f"{hook.url}/weathervane")
        admin.fill("#id_secret", "whsec-0123456789abcdef")
        admin.click("#save")
        admin.wait_for_selector("table.channels tr:has-text('ops hook')")

        admin.click("#new-rule")
        admin.fill("#id_name", "canary down")
        admin.select_option("#id_kind", "deployment_health")
        assert admin.locator('fieldset.params[data-kind="ttft_p95"]').is_hidden()
        admin.check('input[name="param-deployment_health-states"][value="down"]')
        admin.fill("#id_for_s", "0")
        admin.select_option("#id_severity", "critical")
        admin.locator("#preview").filter(has_text="Holds for nothing now.").wait_for(timeout=10_000)
        admin.click("#save")
        admin.wait_for_selector("table.rules tr:has-text('canary down')")

        admin.click("#new-policy")
        admin.fill("#id_name", "canary to the hook")
        admin.fill("#id_order", "1")
        admin.fill("#id_matchers", 'deployment="canary"')
        admin.check('input[name="channels"][value="ops hook"]')
        admin.fill("#id_group_by", "alertname")
        admin.fill("#id_group_wait_s", "0")
        admin.fill("#id_group_interval_s", "60")
        admin.fill("#id_repeat_interval_s", "60")
        admin.click("#save")
        admin.wait_for_selector("table.policies tr:has-text('canary to the hook')")
        assert NotificationPolicy.objects.get(name="canary to the hook").channels.get() == Channel.objects.get()

        # The fault: the probes mark the canary down; the next tick fires and the webhook hears it.
        ProbeTarget.objects.filter(deployment__name="canary").update(health="down", health_reason="3 failures")
        _tick()
        _wait_for(lambda: len(hook.received) == 1)
        told = json.loads(hook.received[0].body)
        assert told["status"] == "firing" and told["alerts"][0]["summary"] == "canary is down: 3 failures"
        assert told["url"] == f"{app_url}/alerts/"
        firing = admin.locator("table.alerts[data-group=firing] tbody tr").first
        firing.filter(has_text="canary is down").wait_for(timeout=10_000)

        firing.get_by_role("link", name="Silence…").click()
        admin.wait_for_selector("#silence-matchers[value*=canary]")
        admin.fill("#silence-reason", "known: the canary is being replaced")
        admin.click("#silence-form button[type=submit]")
        admin.wait_for_selector("table.alerts[data-group=firing] tr.quiet:has-text('silenced')", timeout=10_000)

        # Honoured: the canary recovers and fails again, the repeat falls due; nothing more reaches the webhook.
        ProbeTarget.objects.filter(deployment__name="canary").update(health="up", health_reason="")
        _tick()
        ProbeTarget.objects.filter(deployment__name="canary").update(health="down", health_reason="5 failures")
        _tick()
        _tick(timezone.now() + timedelta(seconds=120))
        delivery.worker().run_due()
        time.sleep(1)
        assert len(hook.received) == 1
        assert Alert.objects.get(state="firing").suppressed == "silenced"
        admin.context.close()

    viewer = signed_in_page(chromium, app_url, "victor", "/alerts/")
    assert viewer.locator("#new-channel, #new-rule, #new-policy").count() == 0
    assert viewer.locator("a:text-is('Edit')").count() == 0
    rule, policy, channel = (model.objects.get().pk for model in (AlertRule, NotificationPolicy, Channel))
    answers = viewer.evaluate("""async ([rule, policy, channel]) => {
        const post = (url) => fetch(url, {method: 'POST', credentials: 'same-origin',
            headers: {'Content-Type': 'application/x-www-form-urlencoded', 'X-CSRFToken': Weathervane.csrfToken()},
            body: 'name=x&kind=webhook'});
        const urls = ['/alerts/channels/new/', `/alerts/channels/${channel}/edit/`,
                      `/alerts/channels/${channel}/delete/`,
                      '/alerts/rules/new/', `/alerts/rules/${rule}/edit/`, `/alerts/rules/${rule}/delete/`,
                      '/alerts/rules/preview/', '/alerts/policies/new/', `/alerts/policies/${policy}/edit/`,
                      `/alerts/policies/${policy}/delete/`, '/alerts/policies/preview/'];
        return Promise.all(urls.map(async (url) => (await post(url)).status));
    }""", [rule, policy, channel])
    assert answers == [403] * 11
    assert Channel.objects.get().name == "ops hook" and NotificationPolicy.objects.filter(name="canary to the hook")
    viewer.context.close()


def test_the_maintenance_windows_table_lays_out_as_a_table_beside_the_deployment_window_picker(
        chromium, app_url, world):
    from dashboard.alerts.models import MaintenanceWindow

    MaintenanceWindow.objects.create(name="upgrade", starts_at=world.route.created_at,
                                     ends_at=world.route.created_at + timedelta(hours=1),
                                     matchers=[{"name": "provider", "op": "=", "value": "simulator"}])
    page = signed_in_page(chromium, app_url, "alice", "/alerts/")
    table = page.locator("table.windows")
    assert table.evaluate("t => getComputedStyle(t).display") == "table"
    # Every cell sits under its column's heading: the header and the row are equally wide, cell for cell.
    widths = table.evaluate("""t => [...t.rows].map((row) => [...row.cells]
        .map((c) => Math.round(c.getBoundingClientRect().left)))""")
    assert len(widths) == 2 and widths[0] == widths[1], widths
    assert table.evaluate("t => t.getBoundingClientRect().width") > 600  # as wide as the page's other tables
    page.goto("/deployments/stable/")
    assert page.locator("#windows").evaluate("n => getComputedStyle(n).display") == "inline-flex"
    page.context.close()


def test_the_routes_page_charts_each_targets_traffic_per_minute_and_keeps_it_live(chromium, app_url, world):
    page = signed_in_page(chromium, app_url, "victor", "/routes/")
    chart = """() => Chart.getChart(document.querySelector('canvas[data-route="chat"]')).data.datasets
        .map((d) => [d.label, d.data.length, d.data.filter((v) => Math.abs(v - 0.3) < 1e-9).length])"""
    datasets = page.evaluate(chart)
    assert [d[0] for d in datasets] == ["canary", "stable"] and all(d[1] == 31 for d in datasets)
    assert datasets[1][2] >= 28  # 18 requests a minute for the last half hour: 0.3/s a bar
    assert page.locator("tr[data-deployment=stable] [data-field=rps]").inner_text().endswith("/s")
    page.context.close()


def test_a_flapping_run_on_the_timeline_opens_to_every_event_and_grows_live(chromium, app_url, world):
    from dashboard import live
    from routing.models import Event, EventKind

    canary = world.route.targets.get(weight=10).deployment
    for n in range(12):
        Event.objects.create(kind=EventKind.HEALTH, deployment=canary, message=f"canary flap {n}")
    page = signed_in_page(chromium, app_url, "victor", "/timeline/?deployment=canary")
    violations = []
    page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    run = page.locator("#timeline > li").first
    assert run.locator("summary").inner_text() == "×12"
    assert not page.locator("text=canary flap 0").is_visible()
    run.locator("summary").click()
    assert page.locator("text=canary flap 0").is_visible()
    assert run.locator("a.object").first.get_attribute("href") == "/deployments/canary/"
    live.timeline_event(Event.objects.create(kind=EventKind.HEALTH, deployment=canary, message="canary flap 12"))
    page.wait_for_selector("#timeline > li:first-child summary:has-text('×13')", timeout=5000)
    assert "canary flap 12" in page.locator("#timeline > li").first.locator(".message").first.inner_text()
    assert page.locator("#timeline > li").count() == 1  # the weights change is not the canary's: filtered out
    assert violations == []
    page.context.close()
