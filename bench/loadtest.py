"""The load generator's own capacity on one core, against the simulator on the other.

usage: .venv/bin/python bench/loadtest.py [--out results.json] [--results-md bench/RESULTS.md]

The generator (this process, pinned to core 0) drives the very engine behind
`manage.py loadtest` at the simulator (its own process, pinned to core 1,
answering at once). Closed-loop phases give the most requests per second the
generator pushes and its CPU per request; open-loop phases check that a given
rate is held on schedule and whether the run says it was limited by the client.
"""

import argparse
import asyncio
import json
import os
import platform
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")

import django  # noqa: E402

django.setup()

from bench.write_sections import replace_section  # noqa: E402
from probes.loadtest.client import Sender, Target  # noqa: E402
from probes.loadtest.metrics import distribution  # noqa: E402
from probes.loadtest.profiles import Phase  # noqa: E402
from probes.loadtest.prompts import builtin  # noqa: E402
from probes.loadtest.runner import LoadTest, Plan  # noqa: E402

GENERATOR_CORE, SIMULATOR_CORE = 0, 1
MODELS = {"bench-fast": {"output_tokens": 16}}
SUGGESTED_MAX_RPS = 50  # the README's heaviest suggested test (see "Load tests")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_simulator(port):
    config = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
    json.dump(MODELS, config)
    config.close()
    command = ["taskset", "-c", str(SIMULATOR_CORE), sys.executable, str(ROOT / "manage.py"), "simulate",
               "--port", str(port), "--config", config.name, "--seed", "1"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("the simulator did not start")


def cpu_s():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def phase(target, name, phase_, requests, duration_s, stream):
    plan = Plan(phases=[phase_], prompts=builtin(), max_requests=requests, max_duration_s=duration_s)
    async with Sender(target, max_tokens=16, stream=stream, timeout_s=30) as sender:
        cpu_before, wall_before = cpu_s(), time.perf_counter()
        result = await LoadTest(plan, sender.send).execute()
        cpu, wall = cpu_s() - cpu_before, time.perf_counter() - wall_before
    summary = result["summary"]
    lag = distribution(s["lag"] for s in result["samples"] if phase_.open_loop)
    return {
        "phase": name, "stream": stream, "requests": summary["count"], "ok": summary["ok"],
        "rps": round(summary["rps"], 1), "generator_cpu_share": round(cpu / wall, 2),
        "generator_cpu_ms_per_request": round(cpu * 1000 / max(summary["count"], 1), 3),
        "capacity_one_core_rps": round(summary["count"] / cpu) if cpu else None,
        "e2e_p50_ms": round(summary["e2e"]["p50"] or 0, 2), "e2e_p99_ms": round(summary["e2e"]["p99"] or 0, 2),
        "dispatch_lag_p95_ms": round(lag["p95"], 2) if lag["p95"] is not None else None,
        "client_limited": result["client_limited"], "client_limited_reason": result["client_limited_reason"],
    }


async def measure(base_url):
    target = Target(url=f"{base_url}/chat/completions", model="bench-fast", secret="sk-bench")
    await phase(target, "warm-up", Phase("c", concurrency=16), 2000, 10, False)
    rows = []
    for stream in (False, True):
        rows.append(await phase(target, "closed loop, 64 in flight", Phase("c", concurrency=64), 30000, 15, stream))
    for rate in (100, 250, 500, 1000):
        rows.append(await phase(target, f"open loop, {rate}/s", Phase("r", rate=rate), rate * 10, 12, True))
    return rows


def section(data):
    rows = ["| phase | streaming | requests (ok) | achieved req/s | generator CPU | CPU ms/request | "
            "one-core capacity | e2e p50 / p99 | dispatch lag p95 | run says client-limited |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for r in data["phases"]:
        lag = f"{r['dispatch_lag_p95_ms']} ms" if r["dispatch_lag_p95_ms"] is not None else "–"
        limited = f"yes: {r['client_limited_reason']}" if r["client_limited"] else "no"
        rows.append(f"| {r['phase']} | {'yes' if r['stream'] else 'no'} | {r['requests']} ({r['ok']}) | {r['rps']:,} | "
                    f"{r['generator_cpu_share']:.0%} | {r['generator_cpu_ms_per_request']} | "
                    f"{r['capacity_one_core_rps']:,} req/s | {r['e2e_p50_ms']} / {r['e2e_p99_ms']} ms | {lag} | "
                    f"{limited} |")
    goal = 10 * SUGGESTED_MAX_RPS
    held = [r for r in data["phases"] if r["phase"] == f"open loop, {goal}/s"]
    verdict = "yes" if held and held[0]["rps"] >= 0.95 * goal and not held[0]["client_limited"] else "**no**"
    return (
        "## Load generator capacity (`bench/loadtest.py`)\n\n"
        f"Run {data['at']} on {data['machine']}: the generator (the engine of `manage.py loadtest`, aiohttp) pinned to "
        f"core {GENERATOR_CORE}, the simulator (`manage.py simulate`, answering at once, 16 output tokens) pinned "
        f"to core {SIMULATOR_CORE}. The machine was shared with other work (1-minute load average "
        f"{data['load_average'][0]} before, "
        f"{data['load_average'][1]} after, on 2 cores), so figures are a floor and a late-waking event loop can be the "
        "neighbours' doing. One-core capacity is requests over the generator's own CPU seconds (user + system).\n\n"
        + "\n".join(rows) + "\n\n"
        f"Goal: at least ten times the heaviest test the README suggests ({SUGGESTED_MAX_RPS} req/s → {goal} req/s, "
        f"streaming) held on schedule on one core, without the run calling itself client-limited. Met? {verdict}. "
        "Where the closed-loop req/s sits below the one-core capacity, the simulator's core, not the generator, "
        "was the limit.\n"
    )


def main():
    parser = argparse.ArgumentParser()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / f"loadtest-{stamp}.json"))
    parser.add_argument("--results-md", default=str(ROOT / "bench" / "RESULTS.md"))
    args = parser.parse_args()
    os.sched_setaffinity(0, {GENERATOR_CORE})
    load_before = os.getloadavg()[0]
    port = free_port()
    simulator = start_simulator(port)
    try:
        phases = asyncio.run(measure(f"http://127.0.0.1:{port}/v1"))
    finally:
        simulator.terminate()
        simulator.wait(10)
    data = {"at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": f"{os.cpu_count()} cores, "
            f"{platform.processor() or platform.machine()}", "phases": phases,
            "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(data, indent=2))
    md = Path(args.results_md)
    md.write_text(replace_section(md.read_text(), "loadtest", section(data)))
    print(json.dumps(phases, indent=2))


if __name__ == "__main__":
    main()
