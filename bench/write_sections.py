"""Put the probes or dashboard benchmark figures into bench/RESULTS.md.

usage: write_sections.py probes|dashboard|soak|rollouts <results.json> <RESULTS.md>

Each part owns the text between its `<!-- NAME:start -->` and
`<!-- NAME:end -->` markers; the rest of the file is left alone.
"""

import json
import sys
from pathlib import Path


def probes(data):
    rows = [("| mode | targets every | probes done / due | lag p50 | lag p95 | lag p99 | lag max | goal (p99) "
             "| verdict |"),
            "|---|---|---|---|---|---|---|---|---|"]
    for p in data["phases"]:
        rows.append(
            f"| {p['mode']} | {p['targets']} / {p['interval_s']} s | {p['probes_done']} / {p['probes_expected']} | "
            f"{p['lag_p50_ms']} ms | {p['lag_p95_ms']} ms | {p['lag_p99_ms']} ms | {p['lag_max_ms']} ms "
            f"| < 250 ms | {p['verdict']} |")
    head = (f"## Probes (`bench/probes.py`)\n\nRun {data['at']}: database {data['database']}, broker {data['broker']}, "
            f"{data['cores']} cores, simulated upstream answering in {data['upstream_latency_ms']} ms.\n")
    return head + "\n" + "\n".join(rows) + "\n"


def soak(data):
    growth = data["mb_per_million_requests"]
    met = growth is not None and growth < 1.0
    shown = "not measured" if growth is None else f"{growth:+.2f} MB"
    return (
        "## Memory soak (`bench/soak.sh`)\n\n"
        f"Run {data['at']}: one gateway worker, c={data['concurrency']} against the shared mock upstream for "
        f"{data['duration_s']:.0f} s ({data['requests']:,.0f} requests); RSS sampled every few seconds and fitted "
        f"against the request count after the first {data['warmup_share']:.0%} of the run.\n\n"
        "| measure | goal | measured | met? |\n|---|---|---|---|\n"
        f"| RSS growth per million requests after warm-up | < 1 MB | {shown} "
        f"({data['rss_start_mb']} → {data['rss_end_mb']} MB) | {'yes' if met else '**no**'} |\n"
    )


def dashboard(data):
    lat = data["latency_ms"]
    ok_latency = lat["p95"] is not None and lat["p95"] <= 500
    ok_delivery = data["clients_missing_updates"] == 0 and data["error_count"] == 0
    return (
        "## Dashboard live path (`bench/dashboard_ws.py`)\n\n"
        "`manage.py serve` (one Daphne process, in-memory channel layer, in-process probes every "
        f"{data['probe_interval_s']} s "
        f"over the demo plus {data['probe_targets_extra']} simulated deployments); {data['clients']} signed-in "
        "WebSocket clients "
        f"(aiohttp, standing in for browsers) on /ws/live/ for {data['duration_s']:.0f} s. "
        "Latency is from the probe result "
        "being recorded (`recorded_at`, published after commit) to its arrival at a client, including the consumer's "
        "250 ms batching window.\n\n"
        "| measure | goal | measured | met? |\n|---|---|---|---|\n"
        "| probe recorded → client, p50 / p95 / p99 / max | p95 ≤ 500 ms | "
        f"{lat['p50']:.0f} / {lat['p95']:.0f} / {lat['p99']:.0f} / {lat['max']:.0f} ms "
        f"({lat['samples']} deliveries) | {'yes' if ok_latency else '**no**'} |\n"
        f"| {data['clients']} clients receive every update | all, no errors | {data['updates_published']} updates, "
        f"{data['clients_missing_updates']} clients missing any, {data['error_count']} errors "
        f"| {'yes' if ok_delivery else '**no**'} |\n"
    )


# case -> (the measure shown, its goal as a test on the Weathervane summary)
ROLLOUT_GOALS = {
    "identical": ("rolled back (false) / promoted", lambda s: s["rolled_back"] < 0.01 and not s["crashed"]),
    "bursts": ("rolled back (false) / promoted", lambda s: s["rolled_back"] < 0.01),
    "sticky": ("rolled back (false) / promoted", lambda s: s["rolled_back"] < 0.01),
    "high_inside": ("rolled back (false) / promoted", lambda s: s["rolled_back"] < 0.01),
    "high_beyond": ("rolled back", lambda s: s["rolled_back"] >= 0.9),
    "low_0.5": ("rolled back within 10 min", lambda s: s["within_10_min"] >= 0.9),
    "low_2": ("rolled back within 10 min", lambda s: s["within_10_min"] >= 0.9),
    "low_0.5_at_25": ("rolled back within 10 min", lambda s: s["within_10_min"] >= 0.9),
    "ttft_only_tight": ("rolled back / drained at the step timeout", lambda s: s["rolled_back"] >= 0.9),
    "ttft_only": ("rolled back / drained at the step timeout", lambda s: s["rolled_back"] >= 0.9),
    "tpot_only": ("rolled back / drained at the step timeout", lambda s: s["rolled_back"] >= 0.9),
    "late": ("never promoted (rolled back / drained)", lambda s: s["promoted"] == 0),
    "limits": ("rolled back (false) / promoted", lambda s: s["rolled_back"] < 0.01),
}


def _pct(value):
    return f"{value * 100:.1f} %"


def _median(summary, kind):
    value = summary[f"median_s_to_{kind}"]
    return "–" if value is None else f"{value:.0f} s"


def _outcomes(summary, name):
    if name.startswith("low_"):
        return f"{_pct(summary['within_10_min'])} (all: {_pct(summary['rolled_back'])})"
    if name.startswith(("ttft_only", "tpot_only", "late")):
        return f"{_pct(summary['rolled_back'])} / {_pct(summary['paused'])}"
    return f"{_pct(summary['rolled_back'])} / {_pct(summary['promoted'])}"


def rollouts(data):
    rows = ["| case | goal | measure | Weathervane (defaults) | met? | median time to roll back / promote "
            "| paused at a timeout | Flagger-style, same streams |",
            "|---|---|---|---|---|---|---|---|"]
    for name, case in data["cases"].items():
        measure, met = ROLLOUT_GOALS.get(name, ("rolled back / promoted", None))
        ours, theirs = case["weathervane"], case["flagger"]
        verdict = "–" if met is None else ("yes" if met(ours) else "**no**")
        times = f"{_median(ours, 'rolled_back')} / {_median(ours, 'promoted')}"
        rows.append(f"| {case['title']} | {case['goal']} | {measure} | {_outcomes(ours, name)} | {verdict} | {times} "
                    f"| {_pct(ours['paused'])} | {_outcomes(theirs, name)} |")
    head = (
        "## Rollout verdicts (`bench/rollout_verdicts.py`)\n\n"
        f"Run {data['at']}: {data['rollouts']:,} simulated rollouts per case (seed {data['seed']}, the run took "
        f"{data['seconds']:.0f} s), judged every 10 s of simulated time by `analysis.judge` on per-minute rollup "
        "deltas and decided by `controller.decide`, with the **default guards** (errors +1 pp, p95 time to first "
        f"token +20 %, p95 time per output token +20 %, alpha {data['alpha']:g}) and the plan "
        f"{' → '.join(str(s['weight']) + ' %' for s in data['plan'])} (60 s dwell), step timeout 1,800 s, unless the "
        "case says otherwise. Flagger-style: every minute the canary's error rate under the baseline's + 1 pp and "
        "its TTFT and per-token p95 under 1.2x the baseline's in that minute; two failed checks roll back, a passed "
        "check moves one step.\n"
    )
    return head + "\n" + "\n".join(rows) + "\n"


def replace_section(text, name, body):
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body}{end}"
    if start in text and end in text:
        return text[: text.index(start)] + block + text[text.index(end) + len(end):]
    return text.rstrip() + "\n\n" + block + "\n"


def main(kind, results, out):
    data = json.loads(Path(results).read_text())
    body = {"probes": probes, "dashboard": dashboard, "soak": soak, "rollouts": rollouts}[kind](data)
    path = Path(out)
    path.write_text(replace_section(path.read_text() if path.exists() else "", kind, body))


if __name__ == "__main__":
    main(*sys.argv[1:4])
