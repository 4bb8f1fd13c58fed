"""`manage.py loadtest`: the load-test engine from the terminal, gating CI by its exit code.

Exit codes: 0 every threshold held; 1 a threshold failed or the run was aborted or
could not run; 2 the settings were refused (or the spend was not confirmed).
"""

import os
import sys

from django.core.management.base import BaseCommand, CommandError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from probes.loadtest import jobs, reports
from probes.loadtest.api.serializers import LoadTestSettingsSerializer
from probes.loadtest.profiles import ProfileKind
from probes.loadtest.prompts import PromptSource
from probes.loadtest.runner import RunStatus
from routing import formats

EXIT_FAILED = 1
EXIT_REFUSED = 2


def _stage(text):
    """'30:10' or '30s:10' -> [30.0, 10.0] (duration s, target rate/s)."""
    duration, _, rate = text.partition(":")
    try:
        return [float(duration.rstrip("s")), float(rate)]
    except ValueError:
        raise ValueError(f"a stage is DURATION:RATE, e.g. 30s:10, not {text!r}") from None


def _slo(text):
    name, _, limit = text.partition("=")
    try:
        return name.strip(), float(limit.strip().removesuffix("ms"))
    except ValueError:
        raise ValueError(f"an SLO is METRIC=MS, e.g. ttft=500, not {text!r}") from None


class Command(BaseCommand):
    help = "Run a load test against a route (through the gateway) or one deployment, and report LLM metrics."

    def add_arguments(self, parser):
        target = parser.add_argument_group("target")
        target.add_argument("--route", help="A route, through the gateway (weights, limits and retries apply)")
        target.add_argument("--deployment", help="One deployment directly, with one of its provider's keys")
        target.add_argument("--gateway-url", help="Default: $WEATHERVANE_GATEWAY_URL, else the gateway a running "
                            "`serve` on this data directory bound (any port), else " + jobs.DEFAULT_CLI_GATEWAY)
        target.add_argument("--gateway-key", default=os.environ.get("WEATHERVANE_GATEWAY_KEY", ""),
                            help="Default: $WEATHERVANE_GATEWAY_KEY, else a key made for the run and disabled after")
        load = parser.add_argument_group("load")
        load.add_argument("--profile", choices=ProfileKind.values, default=ProfileKind.CONCURRENT)
        load.add_argument("--concurrency", default="4", help="One value or several: 1,4,16")
        load.add_argument("--rate", type=float, help="Requests per second (constant, poisson)")
        load.add_argument("--seed", type=int, default=0)
        load.add_argument("--stage", action="append", default=[], help="DURATION:RATE, repeatable (ramps)")
        load.add_argument("--sweep-steps", type=int, default=5)
        load.add_argument("--requests", type=int, default=100, help="Request cap")
        load.add_argument("--duration", type=float, default=60, help="Time cap in seconds")
        load.add_argument("--timeout", type=float, default=60, help="Per-request timeout in seconds")
        asked = parser.add_argument_group("prompts")
        asked.add_argument("--prompts", default=PromptSource.BUILTIN,
                           help="builtin, synthetic, or the path of a JSONL file")
        asked.add_argument("--input-tokens", type=int, default=128, help="Length of synthetic prompts")
        asked.add_argument("--max-tokens", type=int, default=64)
        asked.add_argument("--no-stream", action="store_true")
        judge = parser.add_argument_group("judging and output")
        judge.add_argument("--threshold", action="append", default=[], help="e.g. 'p95(ttft) < 800ms', repeatable")
        judge.add_argument("--abort-on-fail", action="store_true")
        judge.add_argument("--slo", action="append", default=[], help="METRIC=MS for goodput, e.g. ttft=500")
        judge.add_argument("--json", dest="json_path")
        judge.add_argument("--csv", dest="csv_path")
        judge.add_argument("--html", dest="html_path")
        judge.add_argument("--yes", action="store_true", help="Do not ask to confirm the estimated maximum spend")

    def handle(self, *args, **options):
        console = Console(file=self.stdout, highlight=False, width=None if sys.stdout.isatty() else 120)
        settings = self._settings(options)
        run = jobs.create_run(settings)
        console.print(f"Load test #{run.pk} on {run.target_label}: at most {settings['requests']} requests "
                      f"in {settings['duration_s']:g} s; estimated maximum spend "
                      f"[bold]${run.estimated_max_cost:.4f}[/bold]")
        if not options["yes"] and not self._confirmed():
            run.delete()
            raise CommandError("Not confirmed; nothing was sent.", returncode=EXIT_REFUSED)
        run = self._run(run, options, console)
        console.print(summary_table(run))
        for path in reports.write(run, options["json_path"], options["csv_path"], options["html_path"]):
            console.print(f"Wrote {path}")
        return self._verdict(run)

    def _settings(self, options):
        try:
            data = self._data(options)
        except (ValueError, OSError) as problem:
            raise CommandError(str(problem), returncode=EXIT_REFUSED) from None
        serializer = LoadTestSettingsSerializer(data=data)
        if not serializer.is_valid():
            problems = "; ".join(f"{field}: {' '.join(map(str, errors))}" for field, errors in _flat(serializer.errors))
            raise CommandError(f"Refused: {problems}", returncode=EXIT_REFUSED)
        return serializer.as_settings()

    def _data(self, options):
        data = {
            "profile": options["profile"], "concurrency": [int(c) for c in options["concurrency"].split(",") if c],
            "seed": options["seed"], "stages": [_stage(s) for s in options["stage"]],
            "sweep_steps": options["sweep_steps"], "requests": options["requests"], "duration_s": options["duration"],
            "timeout_s": options["timeout"], "input_tokens": options["input_tokens"],
            "max_tokens": options["max_tokens"], "stream": not options["no_stream"],
            "thresholds": options["threshold"], "abort_on_fail": options["abort_on_fail"],
            "slos": dict(_slo(s) for s in options["slo"]),
        }
        for name in ("route", "deployment", "rate"):
            if options[name] is not None:
                data[name] = options[name]
        source = options["prompts"]
        if source in PromptSource.values:
            data["prompts"] = source
        else:
            with open(source, encoding="utf-8") as handle:
                data["prompts"], data["prompts_jsonl"] = PromptSource.JSONL, handle.read()
        return data

    def _confirmed(self):
        if not sys.stdin.isatty():
            raise CommandError("Confirm the spend with --yes when not at a terminal.", returncode=EXIT_REFUSED)
        return input("Start? [y/N] ").strip().lower() in ("y", "yes")

    def _run(self, run, options, console):
        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("{task.fields[figures]}")]
        with Progress(*columns, console=console, transient=False) as bar:
            task = bar.add_task("starting", total=run.settings["requests"], figures="")

            def tick(progress):
                figures = (f"{progress['rps']:.1f} req/s · {progress['errors']} errors · "
                           f"{progress['in_flight']} in flight")
                bar.update(task, completed=progress["done"], description=progress["phase"] or "running",
                           figures=figures)

            job = jobs.Job(run, options["gateway_url"] or jobs.cli_gateway_url(), options["gateway_key"], on_tick=tick)
            return job.run()

    def _verdict(self, run):
        if run.status == RunStatus.FAILED:
            raise CommandError(f"The run could not start: {run.error}", returncode=EXIT_FAILED)
        if run.status == RunStatus.ABORTED or run.passed is False:
            raise CommandError(f"Thresholds failed ({run.stop_reason or 'see the table'}).", returncode=EXIT_FAILED)


def _flat(errors, prefix=""):
    for field, value in errors.items():
        if isinstance(value, dict):
            yield from _flat(value, f"{prefix}{field}.")
        else:
            yield f"{prefix}{field}", value


def summary_table(run):
    """Return the rich table printed at the end of a run."""
    doc = reports.document(run)
    summary = doc["result"].get("summary") or {}
    reason = f" ({run.stop_reason})" if run.stop_reason else ""
    table = Table(title=f"Load test #{run.pk} · {doc['status_label']}{reason}")
    for column in ("metric", "avg", "p50", "p90", "p95", "p99", "p99.9"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for row in doc["latency_rows"]:
        table.add_row(row["label"], *(formats.ms(v) for v in row["values"]))
    table.add_section()
    for label, value in _figures(summary):
        table.add_row(label, value)
    for check in doc["result"].get("thresholds") or []:
        table.add_row(f"{'✓' if check['ok'] else '✗'} {check['threshold']}", _plain(check["value"]))
    if doc["result"].get("client_limited"):
        table.add_row("[yellow]limited by the generator[/yellow]", doc["result"]["client_limited_reason"])
    for error in summary.get("first_errors") or []:
        table.add_row(f"[red]{error['outcome']}[/red]", error["error"])
    return table


def _figures(summary):
    rate = summary.get("success_rate")
    return [
        ("requests", f"{summary.get('count', 0)} ({summary.get('ok', 0)} ok)"),
        ("success rate", formats.pct(rate)),
        ("requests/s", formats.rate(summary.get("rps", 0))),
        ("output tokens/s", f"{summary.get('output_tps', 0):.1f}"),
        ("goodput", formats.pct(summary.get("goodput_ratio")) if summary.get("slos") else "no SLOs"),
        ("cost per 1,000 requests", _dollars(summary.get("cost_per_1k"))),
    ]


def _dollars(value):
    return "–" if value is None else f"${value:.4f}"


def _plain(value):
    return "no figure" if value is None else f"{value:.4g}"
