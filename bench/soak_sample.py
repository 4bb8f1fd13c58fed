"""Sample a gateway's resident memory and request count while a load runs; fit the growth.

usage: soak_sample.py --pid PID --metrics URL --duration S [--interval S] [--warmup-share F] --out FILE

RSS is summed over the process and its children (uvicorn may fork a worker);
the request count is the gateway's own `weathervane_gateway_requests_total`.
Growth per million requests is the least-squares slope of RSS against
requests over the samples after the warm-up share of the run.
"""

import argparse
import json
import re
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

COUNTER = re.compile(rb"^weathervane_gateway_requests_total\{[^}]*\} ([0-9.e+]+)$", re.M)


def rss_mb(pid):
    pids = [pid, *children(pid)]
    total = 0
    for p in pids:
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        total += int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))
    return total / 1024


def children(pid):
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def requests(url, token):
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return sum(float(v) for v in COUNTER.findall(response.read()))


def slope(points):
    """Return the least-squares slope of y on x for [(x, y)], or None with fewer than 2 distinct x."""
    n = len(points)
    if n < 2:
        return None
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    if spread == 0:
        return None
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--metrics", required=True)
    parser.add_argument("--metrics-token", default="", help="WEATHERVANE_METRICS_TOKEN of the gateway")
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--warmup-share", type=float, default=0.5)  # the allocator warms up for ~250k requests
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    samples, started = [], time.monotonic()
    while time.monotonic() - started < args.duration:
        served = requests(args.metrics, args.metrics_token)
        resident = round(rss_mb(args.pid), 2)
        samples.append({"t": round(time.monotonic() - started, 1), "requests": served, "rss_mb": resident})
        time.sleep(args.interval)
    after = [s for s in samples if s["t"] >= args.duration * args.warmup_share]
    growth = slope([(s["requests"] / 1e6, s["rss_mb"]) for s in after])
    result = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"), "duration_s": args.duration,
        "concurrency": args.concurrency, "requests": samples[-1]["requests"] if samples else 0,
        "rss_start_mb": after[0]["rss_mb"] if after else None, "rss_end_mb": after[-1]["rss_mb"] if after else None,
        "mb_per_million_requests": round(growth, 3) if growth is not None else None,
        "warmup_share": args.warmup_share, "samples": samples,
    }
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}))


if __name__ == "__main__":
    main()
