"""A run's results as files: JSON (everything), CSV (one row per request) and a
self-contained HTML report (Chart.js and the chart code inlined: opens offline, from disk).

`document(run)` is the one dict every output is built from, the dashboard page included.
"""

import csv
import io
import json
from pathlib import Path

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.template.loader import render_to_string

from probes.loadtest.metrics import Sample
from probes.loadtest.runner import RunStatus

STATIC = Path(settings.BASE_DIR) / "static"
INLINED_SCRIPTS = (STATIC / "vendor" / "chartjs" / "chart.umd.min.js", STATIC / "js" / "loadtest-charts.js")
LATENCY_ROWS = (("ttft", "Time to first token"), ("itl", "Inter-token latency"),
                ("tpot", "Time per output token"), ("e2e", "End to end"))
CSV_FIELDS = list(Sample().row())


def document(run):
    """Return {run, target, settings, status, passed, result, ...} of a LoadTestRun, JSON-safe."""
    result = run.result or {}
    summary = result.get("summary") or {}
    return {
        "run": run.pk, "target": run.target_label, "settings": run.settings, "status": run.status,
        "status_label": RunStatus(run.status).label, "stop_reason": run.stop_reason, "passed": run.passed,
        "error": run.error, "estimated_max_cost": f"{run.estimated_max_cost:.6f}", "progress": run.progress or {},
        "created_at": run.created_at.isoformat() if run.created_at else None,
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "latency_rows": [{"label": label, "values": [(summary.get(key) or {}).get(q) for q in
                                                      ("avg", "p50", "p90", "p95", "p99", "p99.9")]}
                         for key, label in LATENCY_ROWS],
        "result": result,
    }


def to_json(run):
    return json.dumps(document(run), cls=DjangoJSONEncoder, indent=2)


def to_csv(run):
    """Return one CSV row per request (the stored samples)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for row in (run.result or {}).get("samples") or []:
        writer.writerow(row)
    return out.getvalue()


def to_html(run):
    """Return the offline HTML report of a run."""
    scripts = [path.read_text(encoding="utf-8") for path in INLINED_SCRIPTS]
    css = (STATIC / "css" / "weathervane.css").read_text(encoding="utf-8")
    return render_to_string("loadtest/report.html", {"doc": document(run), "scripts": scripts, "css": css})


def write(run, json_path=None, csv_path=None, html_path=None):
    """Write the files asked for; return the paths written."""
    written = []
    for path, render in ((json_path, to_json), (csv_path, to_csv), (html_path, to_html)):
        if path:
            Path(path).write_text(render(run), encoding="utf-8")
            written.append(str(path))
    return written
