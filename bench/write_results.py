"""Write bench/RESULTS.md from gateway_overhead.py results: the alternating
gateway/floor pairs (median ratio and spread), the goals of issue 3, the
LiteLLM baseline and the bare-Python floor side by side.

usage: write_results.py <results dir> <RESULTS.md>

Only the text between `<!-- gateway:start -->` and `<!-- gateway:end -->` is
replaced (other benchmarks and the hand-written notes around it stay).
"""

import json
import sys
from pathlib import Path

START, END = "<!-- gateway:start -->", "<!-- gateway:end -->"

# (what, goal text, LiteLLM 1.106 1 worker, python floor) from ../shared/bench/RESULTS-*.md
BASELINE = {
    "c1_p50": ("+0.5 ms at most", "+8.12 ms", "+0.22 ms"),
    "c1_p99": ("+1.5 ms at most", "+9.18 ms", "+0.53 ms"),
    "c50_rps": ("4,000 req/s at least", "114 req/s", "7,940 req/s"),
    "c50_p99": ("+25 ms at most", "+1,009 ms", "+13.9 ms"),
    "c50_err": ("0", "0", "0"),
    "ttft": ("+0.7 ms at most", "+10.3 ms", "+0.34 ms"),
    "streams": ("1,500 streams/s at least", "~50 streams/s", "2,898 streams/s"),
    "cpu": ("0.25 ms at most", "~8 ms", "0.12-0.23 ms"),
}


def _ms(row, key):
    return row[key] / 1000.0


def measured(results):
    """Return {metric: (value, text, met)} from results.json."""
    by_c = {r["concurrency"]: r for r in results["nonstream"]}
    by_s = {r["concurrency"]: r for r in results["stream"]}
    out = {}
    if 1 in by_c:
        d, g = by_c[1]["direct"], by_c[1]["gateway"]
        p50, p99 = _ms(g, "p50_us") - _ms(d, "p50_us"), _ms(g, "p99_us") - _ms(d, "p99_us")
        out["c1_p50"] = (f"+{p50:.3f} ms", p50 <= 0.5)
        out["c1_p99"] = (f"+{p99:.3f} ms", p99 <= 1.5)
    if 50 in by_c:
        d, g = by_c[50]["direct"], by_c[50]["gateway"]
        p99 = _ms(g, "p99_us") - _ms(d, "p99_us")
        errs = g["non2xx"] + g["err_connect"] + g["err_read"] + g["err_write"] + g["err_timeout"]
        out["c50_rps"] = (f"{g['rps']:,.0f} req/s", g["rps"] >= 4000)
        out["c50_p99"] = (f"+{p99:.2f} ms", p99 <= 25)
        out["c50_err"] = (str(errs), errs == 0)
    if 1 in by_s:
        d, g = by_s[1]["direct"], by_s[1]["gateway"]
        ttft = g["ttft_p50_ms"] - d["ttft_p50_ms"]
        out["ttft"] = (f"+{ttft:.3f} ms", ttft <= 0.7)
    if 10 in by_s:
        g = by_s[10]["gateway"]
        out["streams"] = (f"{g['rps']:,.0f} streams/s", g["rps"] >= 1500)
    cpus = [r["gateway"].get("cpu_ms_per_req") for r in results["nonstream"] if r["gateway"].get("cpu_ms_per_req")]
    if cpus:
        out["cpu"] = (f"{min(cpus):.3f}-{max(cpus):.3f} ms", max(cpus) <= 0.25)
    return out


LABELS = {
    "c1_p50": "c=1 added latency p50", "c1_p99": "c=1 added latency p99", "c50_rps": "c=50 throughput",
    "c50_p99": "c=50 added latency p99", "c50_err": "c=50 errors", "ttft": "stream c=1 added TTFT p50",
    "streams": "stream c=10 throughput", "cpu": "gateway CPU per request (non-streaming runs)",
}


def headline(results, floor_results=None):
    same_run = measured(floor_results) if floor_results else {}
    rows = [("| measure | goal | Weathervane (this run) | met? | bare floor, same run | LiteLLM 1.106, 1 worker "
             "| bare floor, shared measurement |"),
            "|---|---|---|---|---|---|---|"]
    got = measured(results)
    for metric, (goal, litellm, floor) in BASELINE.items():
        value, met = got.get(metric, ("not measured", None))
        mark = "-" if met is None else ("yes" if met else "**no**")
        floor_now = same_run.get(metric, ("not measured", None))[0]
        rows.append(f"| {LABELS[metric]} | {goal} | {value} | {mark} | {floor_now} | {litellm} | {floor} |")
    return "\n".join(rows)


def _tables(summary_file):
    """Return the harness's summary.md without its own title line."""
    text = summary_file.read_text()
    return text.split("\n", 2)[2] if text.startswith("## ") else text


def _load(directory):
    path = directory / "results.json"
    return json.loads(path.read_text()) if path.exists() else None


def pairs(out_dir):
    """Return [(pair dir, gateway results, floor results or None)] in run order (one pair for older layouts)."""
    dirs = sorted(out_dir.glob("pair-*"), key=lambda d: int(d.name.split("-")[1])) or [out_dir]
    return [(d, _load(d), _load(d / "floor")) for d in dirs if _load(d) is not None]


def _c50(results):
    row = next((r for r in results["nonstream"] if r["concurrency"] == 50), None)
    return (row["gateway"]["rps"], row["gateway"].get("cpu_ms_per_req")) if row else (None, None)


def ratios(runs):
    """Return [(pair name, gw rps, floor rps, rps ratio, gw cpu, floor cpu, cpu ratio)] at c=50."""
    rows = []
    for directory, gateway, floor in runs:
        if floor is None:
            continue
        (g_rps, g_cpu), (f_rps, f_cpu) = _c50(gateway), _c50(floor)
        if g_rps and f_rps:
            cpu_ratio = g_cpu / f_cpu if g_cpu and f_cpu else None
            rows.append((directory.name, g_rps, f_rps, g_rps / f_rps, g_cpu, f_cpu, cpu_ratio))
    return rows


def _median(values):
    values = sorted(values)
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def comparison(rows):
    """Return the same-run comparison table and its median line."""
    if not rows:
        return ""
    lines = [("| pair | gateway c=50 req/s | floor c=50 req/s | gateway / floor | gateway CPU ms/req "
              "| floor CPU ms/req | CPU ratio |"),
             "|---|---|---|---|---|---|---|"]
    for name, g_rps, f_rps, ratio, g_cpu, f_cpu, cpu_ratio in rows:
        cpu = f"{g_cpu:.3f} | {f_cpu:.3f} | {cpu_ratio:.2f}" if cpu_ratio else "- | - | -"
        lines.append(f"| {name} | {g_rps:,.0f} | {f_rps:,.0f} | {ratio:.1%} | {cpu} |")
    throughput = [r[3] for r in rows]
    cpu = [r[6] for r in rows if r[6]]
    lines += ["", f"Median gateway/floor throughput at c=50: **{_median(throughput):.1%}** "
                  f"(spread {min(throughput):.1%}-{max(throughput):.1%}, {len(rows)} alternating pairs)"
                  + (f"; CPU per request {_median(cpu):.2f}x the floor's "
                     f"(spread {min(cpu):.2f}-{max(cpu):.2f})." if cpu else ".")]
    return "\n".join(lines)


def section(out_dir, root):
    runs = pairs(out_dir)
    rows = ratios(runs)
    median_name = sorted(rows, key=lambda r: r[3])[len(rows) // 2][0] if rows else runs[0][0].name
    directory, results, floor_results = next(r for r in runs if r[0].name == median_name or len(runs) == 1)
    info = results["info"]
    shown = out_dir.relative_to(root) if out_dir.is_relative_to(root) else out_dir
    return "\n".join([
        "## Gateway overhead (`bench/gateway.sh`)",
        "",
        f"Run {info['started']} on {info['machine']['nproc']} x {info['machine']['cpu_model']}; "
        f"{info.get('note', '')}. "
        f"Raw outputs: `{shown}`.",
        "",
        "### Gateway and bare floor, alternating in one sitting",
        "",
        comparison(rows) or "No floor was measured (FLOOR=0).",
        "",
        f"### Against the goals of issue 3 and the baselines (the median pair, {directory.name})",
        "",
        headline(results, floor_results),
        "",
        "### Full tables from the harness (the median pair)",
        "",
        _tables(directory / "summary.md"),
        *(["", "#### The bare pass-through floor, measured in the same pair", "",
           _tables(directory / "floor" / "summary.md")]
          if floor_results else []),
    ]) + "\n"


def replace_section(text, body):
    block = f"{START}\n{body}{END}"
    if START in text and END in text:
        return text[: text.index(START)] + block + text[text.index(END) + len(END):]
    return text.rstrip() + "\n\n" + block + "\n" if text.strip() else block + "\n"


def main():
    out_dir, target = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
    body = section(out_dir, target.parent.parent)
    target.write_text(replace_section(target.read_text() if target.exists() else "", body))


if __name__ == "__main__":
    main()
