"""Write bench/RESULTS.md from a gateway_overhead.py results.json: the goals of
issue 3, the LiteLLM baseline and the bare-Python floor side by side.

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
    rows = ["| measure | goal | Weathervane (this run) | met? | bare floor, same run | LiteLLM 1.106, 1 worker | bare floor, shared measurement |",
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


def section(out_dir, root):
    results = json.loads((out_dir / "results.json").read_text())
    floor_file = out_dir / "floor" / "results.json"
    floor_results = json.loads(floor_file.read_text()) if floor_file.exists() else None
    info = results["info"]
    shown = out_dir.relative_to(root) if out_dir.is_relative_to(root) else out_dir
    return "\n".join([
        "## Gateway overhead (`bench/gateway.sh`)",
        "",
        f"Run {info['started']} on {info['machine']['nproc']} x {info['machine']['cpu_model']}; {info.get('note', '')}. "
        f"Raw outputs: `{shown}`.",
        "",
        "### Against the goals of issue 3 and the baselines",
        "",
        headline(results, floor_results),
        "",
        "### Full tables from the harness",
        "",
        _tables(out_dir / "summary.md"),
        *(["", "#### The bare pass-through floor, measured in the same run", "", _tables(out_dir / "floor" / "summary.md")]
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
