"""The 16-fault scorecard of issue 9: every classic upstream fault against a gateway with the DEFAULT settings.

    .venv/bin/python bench/faults.py [--results bench/RESULTS.md] [--only 8,9]

Starts the simulator and a gateway on loopback (a throwaway data directory), then plays each fault on its
own route "primary 100 %, fallback on failure": the faulty deployment is the route's one weighted target
(weight 100) and a healthy one its fallback chain, so the first attempt always hits the fault, and a
failover or continuation lands on the fallback.
Every deployment has its own provider (and key), as primary and fallback do in real life, so a 429 cooling
one key does not touch the other. No route sets `continue_streams`: the default ("auto") continues a broken
stream on targets whose prefill support a probe verified, and the seed step runs that probe
(probes.prefill.check, the real request through the simulator) on every fallback, with its case's personality,
before the simulator's log is cleared: a fallback that continues a prefill is verified, the one that refuses it
(accepts_prefill false) is found refusing and is never sent one.

The scorecard is the product as shipped: no setting of the gateway, a route or a deployment is changed for
any case (continuation on its default, context windows and first-token timeouts not set). As in production,
each primary first serves WARMUP_REQUESTS healthy streams, so the gateway has measured its time to first
token before the fault starts (a deployment that was working, then breaks); the gateway learns its
first-token timeout from them by itself, on its own schedule.

Each fault is judged from what the client received:
  answered   a whole, correct answer: status 200, the expected text exactly once, one [DONE]; or, where the
             right answer is the provider's own refusal (content filter), that refusal as it came
  safe       an explicit error: an HTTP error in OpenAI's shape, or a stream ending with the error event and
             no [DONE], whose text is an unduplicated prefix of the answer
  wrong      anything else: a wrong, duplicated or truncated-but-"successful" answer
Cases run concurrently (they share nothing but the retry budget), so a run takes about two minutes; the
timeouts are the defaults (read 30 s; first token learned from the warm-up: 4 x its p99, at least 5 s;
deadline 120 s; circuit 5 failures, then the gateway's own trials every 1 s doubling to at most 4 s). The
"primary recovers" case is a minute of 500s and 503s (RECOVERY_OUTAGE_S), timed from the primary's recovery
to the first request it serves again.

Results go to the `faults` section of bench/RESULTS.md (between its markers; appended when missing).
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
os.environ.setdefault("WEATHERVANE_DATA_DIR", tempfile.mkdtemp(prefix="weathervane-faults-"))
os.environ.setdefault("WEATHERVANE_ALLOW_PRIVATE_UPSTREAMS", "true")  # the simulator is on loopback
os.environ.setdefault("WEATHERVANE_LOG_LEVEL", "ERROR")

import django  # noqa: E402

django.setup()

import httpx  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402

from probes import prefill  # noqa: E402
from routing.gateway.app import Gateway  # noqa: E402
from routing.gateway.serve import GatewayServer  # noqa: E402
from routing.models import ApiKey, Deployment, GatewayKey, Provider, Route, RouteFallback, RouteTarget  # noqa: E402
from routing.simulator import Simulator, SimulatorServer, personality_from  # noqa: E402

MAX_TOKENS = 60
ANSWER = "".join(f"tok{i} " for i in range(MAX_TOKENS))
RECOVERY_OUTAGE_S = 60.0  # the "fails for a minute"
BACK_WITHIN_S = 5.0  # "back within a few seconds" of recovering
WARMUP_REQUESTS = 25  # healthy streams per primary before the faults (the gateway learns from 20)
LEARN_WAIT_S = 90.0  # the longest the warm-up waits for the gateway to have learned every primary's timeout
RESULTS_START, RESULTS_END = "<!-- faults:start -->", "<!-- faults:end -->"


@dataclass
class Case:
    name: str
    primary: dict
    fallback: dict = field(default_factory=dict)
    expect: str = "the fallback's answer"
    play: str = "stream"  # stream | content_filter | recovery | accounting
    within_s: float | None = None  # an answer later than this is not "answered": the client waited too long


CASES = [
    Case("429 with Retry-After", {"rate_429": 1, "retry_after_s": 1}),
    Case("429 without Retry-After", {"rate_429": 1, "retry_after_s": None}),
    Case("500 once", {"fail_first": 1}, expect="the primary's answer on the retry"),
    Case("503 forever", {"error_rate": 1, "error_status": 503}),
    Case("connection reset", {"fault": "reset_before_headers"}),
    Case("no response at all", {"fault": "silence"}, within_s=10,
         expect="the fallback's answer after the primary's learned first-token timeout (5 s), not the 30 s read "
                "timeout"),
    Case("20 s first token", {"fault": "slow_first_token", "fault_delay_s": 20}, within_s=10,
         expect="the fallback's answer after the primary's learned first-token timeout (5 s), never a 20 s wait"),
    Case("stream cut after 40 of 60 tokens", {"fault": "cut_midway", "fault_after_tokens": 40},
         expect="the whole answer, continued on the fallback"),
    Case("stream stalls mid-way", {"fault": "stall", "fault_after_tokens": 30, "fault_delay_s": 90},
         expect="the whole answer, continued on the fallback after the 30 s idle timeout"),
    Case("malformed chunk", {"fault": "malformed_chunk"},
         expect="the primary's answer, the bad event skipped"),
    Case("stream without [DONE]", {"fault": "no_done"},
         expect="the primary's answer, [DONE] added"),
    Case("context-length 400", {"context_window": 40},
         expect="the fallback's answer (nobody typed a window: the primary's 400 fails over to the fallback, "
                "whose window is unknown), else the 400 in OpenAI's shape"),
    Case("content-filter 400", {"content_filter": True}, play="content_filter",
         expect="the provider's 400 passed through, tried once, the circuit untouched"),
    Case("fallback refuses an assistant prefill", {"fault": "cut_midway", "fault_after_tokens": 40},
         {"accepts_prefill": False}, expect="the error event (an explicit error), no prefill sent to the fallback"),
    Case("primary fails, then recovers", {"schedule": [{"after_s": 0, "until_s": RECOVERY_OUTAGE_S,
                                                        "error_rate_delta": 1}]}, play="recovery",
         expect=f"every request answered; the primary serves again within {BACK_WITHIN_S:g} s of recovering "
                f"from a {RECOVERY_OUTAGE_S:g} s outage of 500s and 503s"),
    Case("attempt accounting (a 429 storm)", {"rate_429": 1, "retry_after_s": 1}, {"rate_429": 1, "retry_after_s": 1},
         play="accounting", expect="429 with Retry-After; attempts within the cap and equal to what the upstreams saw"),
]


# --- setting up --------------------------------------------------------------------------


def deployment(name, base_url, model):
    provider = Provider.objects.create(name=f"{name}-provider", base_url=base_url)  # default timeouts
    key = ApiKey(provider=provider, label="main")
    key.set_secret(f"sk-bench-{name}")
    key.save()
    return Deployment.objects.create(name=name, provider=provider, upstream_model=model, input_price_per_mtok=1,
                                     output_price_per_mtok=2)


def seed(cases, base_url):
    """Create one route per case and a gateway key; return (the key, {case name: (route name, session,
    primary deployment and model, fallback deployment and model)})."""
    plan = {}
    for number, case in enumerate(cases, 1):
        route_name = f"c{number:02d}"
        primary, fallback = f"{route_name}-primary", f"{route_name}-fallback"
        route = Route.objects.create(name=route_name)  # continue_streams: the default
        first, second = (deployment(name, base_url, name) for name in (primary, fallback))
        RouteTarget.objects.create(route=route, deployment=first, weight=100)
        RouteFallback.objects.create(route=route, deployment=second, position=1)
        plan[case.name] = (route_name, f"session-{number}", primary, fallback)
    client = GatewayKey(name="faults")
    plaintext = client.generate()
    client.save()
    return plaintext, plan


# --- judging -----------------------------------------------------------------------------


def parse_stream(text):
    payloads = [line[6:] for line in text.split("\n") if line.startswith("data: ")]
    chunks = [json.loads(p) for p in payloads if p != "[DONE]"]
    content = "".join((c["choices"][0]["delta"].get("content") or "") for c in chunks if c.get("choices"))
    return payloads, chunks, content


def judge_stream(response):
    """Return (verdict, detail) for a streamed answer."""
    if response.status_code != 200:
        try:
            error = response.json()["error"]
            return "safe", f"{response.status_code} {error.get('code')}"
        except (ValueError, KeyError, TypeError):
            return "wrong", f"{response.status_code} without an OpenAI error body"
    payloads, chunks, content = parse_stream(response.text)
    errors = [c for c in chunks if "error" in c]
    done = payloads.count("[DONE]")
    if not errors and done == 1 and payloads[-1] == "[DONE]" and content == ANSWER:
        return "answered", f"200, {len(content.split())} tokens, one [DONE]"
    if errors and done == 0 and "error" in json.loads(payloads[-1]) and ANSWER.startswith(content):
        return "safe", f"error event after {len(content.split())} tokens ({errors[-1]['error'].get('code')})"
    return "wrong", f"200 with {len(content.split())} tokens, {done} [DONE], {len(errors)} error events"


def is_trial(attempt):
    """Return True for one of the gateway's own circuit trials (one token), not a client's request."""
    return attempt.max_tokens == 1


class Bench:
    def __init__(self, gateway, simulator, key, plan):
        self.gateway, self.simulator, self.key, self.plan = gateway, simulator, key, plan

    def post(self, route, session, timeout=150.0):
        body = {"model": route, "messages": [{"role": "user", "content": "Count for me, please."}], "stream": True,
                "max_tokens": MAX_TOKENS}
        headers = {"Authorization": f"Bearer {self.key}", "x-session-id": session}
        return httpx.post(f"{self.gateway.base_url}/chat/completions", json=body, headers=headers, timeout=timeout)

    def attempts(self, model):
        """Return the attempts clients' requests made at `model` (the gateway's trials left out)."""
        return [a for a in self.simulator.attempts(model) if not is_trial(a)]

    def warm_up(self, case):
        """Send WARMUP_REQUESTS healthy streams to the route of `case`, as its traffic did before the fault.

        Returns (streams answered, the primary's name when it served them).
        """
        route, session, primary, fallback = self.plan[case.name]
        self.simulator.set_model(primary, personality_from({}))
        self.simulator.set_model(fallback, personality_from({}))
        answered, served = 0, set()
        for _ in range(WARMUP_REQUESTS):
            response = self.post(route, session)
            answered += judge_stream(response)[0] == "answered"
            served.add(response.headers.get("x-weathervane-deployment"))
        return answered, primary if primary in served else None

    def learned(self, names):
        """Return how many of the deployments `names` have a learned first-token timeout in the gateway's snapshot."""
        snapshot = self.gateway.gateway.store.current
        ids = Deployment.objects.filter(name__in=names).values_list("id", flat=True)
        return sum(1 for pk in ids if pk in snapshot.first_token and snapshot.first_token[pk].source == "learned")

    def play(self, case):
        route, session, primary, fallback = self.plan[case.name]
        self.simulator.set_model(primary, personality_from(case.primary))
        self.simulator.set_model(fallback, personality_from(case.fallback))
        started = time.monotonic()
        verdict, detail = getattr(self, f"play_{case.play}")(route, session, primary, fallback)
        seconds = time.monotonic() - started
        if verdict == "answered" and case.within_s is not None and seconds > case.within_s:
            verdict, detail = "safe", f"{detail}; but only after {seconds:.1f} s"
        return {"number": CASES.index(case) + 1, "fault": case.name, "expect": case.expect, "verdict": verdict,
                "detail": detail, "seconds": round(seconds, 1),
                "upstream": f"{len(self.attempts(primary))} + {len(self.attempts(fallback))}"}

    def play_stream(self, route, session, primary, fallback):
        response = self.post(route, session)
        verdict, detail = judge_stream(response)
        name = response.headers.get("x-weathervane-deployment")
        served = f"header names the {name.rsplit('-', 1)[-1]}" if name else "no deployment named (the gateway's own)"
        prefills = [a.prefill for a in self.attempts(fallback) if a.prefill]
        note = f"; the fallback was sent a {len(prefills[0].split())}-token prefill" if prefills else ""
        if f": x-weathervane-continued-by: {fallback}\n" in response.text:
            note += " and is named in the stream as the one that continued it"
        return verdict, f"{detail}; {served}{note}"

    def play_content_filter(self, route, session, primary, fallback):
        response = self.post(route, session)
        tried = len(self.attempts(primary)) + len(self.attempts(fallback))
        breaker = self.gateway.gateway.breakers
        untouched = all(breaker.available(t.deployment_id) for t in self.gateway.gateway.store.current.routes[route]
                        .targets)
        try:
            code = response.json()["error"]["code"]
        except (ValueError, KeyError, TypeError):
            code = None
        if response.status_code == 400 and code == "content_filter" and tried == 1 and untouched:
            return "answered", "the provider's 400 content_filter passed through; one attempt; circuit closed"
        if response.status_code >= 400 and code:
            return "safe", f"{response.status_code} {code} after {tried} attempts"
        return judge_stream(response)

    def play_recovery(self, route, session, primary, fallback):
        started, verdicts, back_at = time.monotonic(), [], None
        while time.monotonic() - started < RECOVERY_OUTAGE_S + 40:
            response = self.post(route, session, timeout=30)
            verdicts.append(judge_stream(response)[0])
            now = time.monotonic() - started
            if now > RECOVERY_OUTAGE_S and response.headers.get("x-weathervane-deployment") == primary:
                back_at = now - RECOVERY_OUTAGE_S
                break
            time.sleep(0.5)
        answered = verdicts.count("answered")
        trials = sum(1 for a in self.simulator.attempts(primary) if is_trial(a))
        if "wrong" in verdicts:
            return "wrong", f"{verdicts.count('wrong')} of {len(verdicts)} requests answered wrongly"
        summary = (f"{answered} of {len(verdicts)} requests answered (one every 0.5 s); the gateway sent the primary "
                   f"{trials} one-token trials")
        if back_at is None:
            return "safe", f"{summary}; the primary got no traffic back within 40 s of recovering"
        verdict = "answered" if answered == len(verdicts) and back_at <= BACK_WITHIN_S else "safe"
        return verdict, f"{summary}; the primary served again {back_at:.1f} s after it recovered"

    def play_accounting(self, route, session, primary, fallback, requests=8):
        with ThreadPoolExecutor(requests) as pool:
            responses = list(pool.map(lambda _: self.post(route, session), range(requests)))
        headers = [int(r.headers.get("x-weathervane-attempts", -1)) for r in responses]
        seen = len(self.attempts(primary)) + len(self.attempts(fallback))
        limited = all(r.status_code == 429 and "retry-after" in r.headers for r in responses)
        cap = settings.GATEWAY_MAX_ATTEMPTS
        detail = (f"{requests} requests: statuses {sorted({r.status_code for r in responses})}, attempts per request "
                  f"{min(headers)}-{max(headers)} (cap {cap}), {sum(headers)} counted vs {seen} seen upstream")
        if any(r.status_code == 200 for r in responses):
            return "wrong", detail
        return ("answered" if limited and sum(headers) == seen and max(headers) <= cap else "safe"), detail


# --- running and reporting ----------------------------------------------------------------


def check_prefill(cases, plan, simulator):
    """Run the prefill probe on every case's fallback, as its personality answers, then forget its requests (the
    cases count what the upstreams saw). Returns {fallback: verdict}."""
    verdicts = {}
    for case in cases:
        _, _, _, fallback = plan[case.name]
        simulator.set_model(fallback, personality_from(case.fallback))
        verdicts[fallback] = prefill.check(Deployment.objects.get(name=fallback).pk)
    simulator.reset()
    return verdicts


def warm_up(bench, cases):
    """Give every primary its healthy history, then wait until the gateway has learned from it by itself.

    Returns a sentence saying how it went.
    """
    started = time.monotonic()
    with ThreadPoolExecutor(len(cases)) as pool:
        results = list(pool.map(bench.warm_up, cases))
    primaries = [primary for _, primary in results if primary is not None]
    deadline = time.monotonic() + LEARN_WAIT_S
    while bench.learned(primaries) < len(primaries) and time.monotonic() < deadline:
        time.sleep(0.5)
    bench.simulator.reset()  # the cases count their own attempts
    answered = sum(answered for answered, _ in results)
    return (f"{answered} of {len(cases) * WARMUP_REQUESTS} warm-up streams answered; the gateway learned the "
            f"first-token timeouts of {bench.learned(primaries)} of the {len(primaries)} primaries that served them "
            f"by itself in {time.monotonic() - started:.0f} s")


def run(cases):
    """Return (rows, a sentence on the warm-up) of playing `cases`."""
    call_command("migrate", verbosity=0)
    with SimulatorServer(Simulator(seed=9)) as sim:
        key, plan = seed(cases, sim.base_url)
        check_prefill(cases, plan, sim.simulator)
        server = GatewayServer(Gateway()).start()
        try:
            bench = Bench(server, sim.simulator, key, plan)
            warm = warm_up(bench, cases)
            with ThreadPoolExecutor(len(cases)) as pool:
                return list(pool.map(bench.play, cases)), warm
        finally:
            server.stop()


def table(rows):
    lines = ["| # | fault | expected | verdict | what the client got | upstream attempts (primary + fallback) | s |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        verdict = {"answered": "answered", "safe": "safe error", "wrong": "**WRONG**"}[row["verdict"]]
        lines.append(f"| {row['number']} | {row['fault']} | {row['expect']} | {verdict} | {row['detail']} | "
                     f"{row['upstream']} | {row['seconds']} |")
    return "\n".join(lines)


def section(rows, wall_s, warm):
    counts = {v: sum(1 for r in rows if r["verdict"] == v) for v in ("answered", "safe", "wrong")}
    at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"{RESULTS_START}\n## Fault scorecard (`bench/faults.py`)\n\n"
        f"Run {at} on {os.cpu_count()} cores ({platform.python_implementation()} {platform.python_version()}), "
        f"{wall_s:.0f} s wall time, against the simulator, **with the defaults exactly as shipped**: no setting of "
        "the gateway, a route or a deployment changed for any case. Each fault on its own route: the faulty "
        "deployment at weight 100 and a healthy one as its fallback chain (continuation by default, onto fallbacks "
        "the prefill probe verified in the seed step). Before the faults each primary served "
        f"{WARMUP_REQUESTS} healthy streams, as a working deployment has history ({warm}). The outage of the "
        f"recovery case is {RECOVERY_OUTAGE_S:g} s of 500s and 503s, with the default circuit (5 failures, then the "
        "gateway's own one-token trials every 1 s doubling to at most 4 s).\n\n"
        f"**{counts['answered']} answered correctly, {counts['safe']} safe explicit errors, {counts['wrong']} wrong** "
        f"of {len(rows)}.\n\n{table(rows)}\n{RESULTS_END}\n"
    )


def write(results_path, text):
    path = Path(results_path)
    current = path.read_text() if path.exists() else ""
    if RESULTS_START in current and RESULTS_END in current:
        head, rest = current.split(RESULTS_START, 1)
        current = head + text.rstrip("\n") + rest.split(RESULTS_END, 1)[1]
    else:
        current = current.rstrip("\n") + "\n\n" + text
    path.write_text(current)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", default=str(ROOT / "bench" / "RESULTS.md"))
    parser.add_argument("--only", default="", help="comma-separated case numbers (not written to the results)")
    args = parser.parse_args()
    cases = CASES
    if args.only:
        cases = [CASES[int(n) - 1] for n in args.only.split(",")]
    started = time.monotonic()
    rows, warm = run(cases)
    wall = time.monotonic() - started
    print(table(rows))
    print(f"\n{warm}")
    print(f"{sum(r['verdict'] == 'answered' for r in rows)} answered, {sum(r['verdict'] == 'safe' for r in rows)} "
          f"safe, {sum(r['verdict'] == 'wrong' for r in rows)} wrong of {len(rows)} ({wall:.0f} s)")
    if not args.only:
        write(args.results, section(rows, wall, warm))
        print(f"written to {args.results}")


if __name__ == "__main__":
    main()
