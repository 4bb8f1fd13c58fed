"""Put the probes or dashboard benchmark figures into bench/RESULTS.md.

usage: write_sections.py probes|dashboard|soak <results.json> <RESULTS.md>

Each part owns the text between its `<!-- NAME:start -->` and
`<!-- NAME:end -->` markers; the rest of the file is left alone.
"""

import json
import sys
from pathlib import Path


def probes(data):
    rows = ["| mode | targets every | probes done / due | lag p50 | lag p95 | lag p99 | lag max | goal (p99) | verdict |",
            "|---|---|---|---|---|---|---|---|---|"]
    for p in data["phases"]:
        rows.append(
            f"| {p['mode']} | {p['targets']} / {p['interval_s']} s | {p['probes_done']} / {p['probes_expected']} | "
            f"{p['lag_p50_ms']} ms | {p['lag_p95_ms']} ms | {p['lag_p99_ms']} ms | {p['lag_max_ms']} ms | < 250 ms | {p['verdict']} |")
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
        f"`manage.py serve` (one Daphne process, in-memory channel layer, in-process probes every {data['probe_interval_s']} s "
        f"over the demo plus {data['probe_targets_extra']} simulated deployments); {data['clients']} signed-in WebSocket clients "
        f"(aiohttp, standing in for browsers) on /ws/live/ for {data['duration_s']:.0f} s. Latency is from the probe result "
        "being recorded (`recorded_at`, published after commit) to its arrival at a client, including the consumer's "
        "250 ms batching window.\n\n"
        "| measure | goal | measured | met? |\n|---|---|---|---|\n"
        f"| probe recorded → client, p50 / p95 / p99 / max | p95 ≤ 500 ms | {lat['p50']:.0f} / {lat['p95']:.0f} / {lat['p99']:.0f} / {lat['max']:.0f} ms "
        f"({lat['samples']} deliveries) | {'yes' if ok_latency else '**no**'} |\n"
        f"| {data['clients']} clients receive every update | all, no errors | {data['updates_published']} updates, "
        f"{data['clients_missing_updates']} clients missing any, {data['error_count']} errors | {'yes' if ok_delivery else '**no**'} |\n"
    )


def replace_section(text, name, body):
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body}{end}"
    if start in text and end in text:
        return text[: text.index(start)] + block + text[text.index(end) + len(end):]
    return text.rstrip() + "\n\n" + block + "\n"


def main(kind, results, out):
    data = json.loads(Path(results).read_text())
    body = {"probes": probes, "dashboard": dashboard, "soak": soak}[kind](data)
    path = Path(out)
    path.write_text(replace_section(path.read_text() if path.exists() else "", kind, body))


if __name__ == "__main__":
    main(*sys.argv[1:4])
