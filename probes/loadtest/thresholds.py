"""Pass/fail thresholds in k6's spirit: `p95(ttft) < 800ms`, `error_rate < 1%`.

A threshold is `<metric> <op> <number>[unit]`. Timed metrics (ttft, itl, tpot,
e2e) take an aggregate: avg, min, max, p50, p90, p95, p99 or p99.9. Rates
(error_rate, success_rate, goodput_ratio) take `%` or a fraction; throughput
(rps, output_tps, goodput_rps) and cost (cost_per_1k, cost) take plain numbers.
"""

import operator
import re
from dataclasses import dataclass

from probes.loadtest.metrics import PERCENTILES, TIMED

AGGREGATES = ("avg", "min", "max", *(f"p{q:g}" for q in PERCENTILES))
RATES = ("error_rate", "success_rate", "goodput_ratio")
PLAIN = ("rps", "output_tps", "goodput_rps", "cost_per_1k", "cost")
OPERATORS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
UNITS = {"ms": 1.0, "s": 1000.0}
PATTERN = re.compile(
    r"^\s*(?:(?P<agg>[a-z0-9.]+)\((?P<timed>[a-z_0-9]+)\)|(?P<plain>[a-z_0-9]+))\s*"
    r"(?P<op><=|>=|<|>)\s*(?P<value>\d+(?:\.\d+)?)\s*(?P<unit>ms|s|%)?\s*$"
)


class ThresholdError(ValueError):
    """A threshold that cannot be read; the message says why."""


@dataclass(frozen=True)
class Threshold:
    text: str
    metric: str
    aggregate: str | None
    op: str
    value: float  # ms for timed metrics, a fraction for rates

    def measure(self, summary):
        """Return the figure this threshold looks at in a run summary (None when there is none)."""
        if self.aggregate:
            return (summary.get(self.metric) or {}).get(self.aggregate)
        return summary.get(self.metric)

    def check(self, summary):
        """Return {threshold, value, ok}; a missing figure fails (nothing measured is no evidence)."""
        value = self.measure(summary)
        passed = value is not None and OPERATORS[self.op](value, self.value)
        return {"threshold": self.text, "value": value, "ok": passed}


def parse(text):
    """Return the Threshold of `text`; raise ThresholdError saying what is wrong."""
    match = PATTERN.match(text or "")
    if not match:
        raise ThresholdError(f"{text!r} is not of the form 'p95(ttft) < 800ms' or 'error_rate < 1%'.")
    value, unit, op = float(match["value"]), match["unit"], match["op"]
    if match["timed"]:
        return _timed(text, match["agg"], match["timed"], op, value, unit)
    return _plain(text, match["plain"], op, value, unit)


def _timed(text, aggregate, metric, op, value, unit):
    if metric not in TIMED:
        raise ThresholdError(f"{text!r}: unknown timed metric {metric!r}; use one of {', '.join(TIMED)}.")
    if aggregate not in AGGREGATES:
        raise ThresholdError(f"{text!r}: unknown aggregate {aggregate!r}; use one of {', '.join(AGGREGATES)}.")
    if unit == "%":
        raise ThresholdError(f"{text!r}: a time takes ms or s, not %.")
    return Threshold(text.strip(), metric, aggregate, op, value * UNITS[unit or "ms"])


def _plain(text, metric, op, value, unit):
    if metric in RATES:
        if unit in UNITS:
            raise ThresholdError(f"{text!r}: a rate takes % or a fraction, not {unit}.")
        fraction = value / 100 if unit == "%" else value
        if fraction > 1:
            raise ThresholdError(f"{text!r}: a rate is at most 100%.")
        return Threshold(text.strip(), metric, None, op, fraction)
    if metric in PLAIN:
        if unit:
            raise ThresholdError(f"{text!r}: {metric} takes a plain number.")
        return Threshold(text.strip(), metric, None, op, value)
    known = ", ".join((*RATES, *PLAIN))
    raise ThresholdError(f"{text!r}: unknown metric {metric!r}; use p95(ttft)-style timings or one of {known}.")


def check_all(thresholds, summary):
    """Return (every threshold passed, [{threshold, value, ok}, ...])."""
    results = [t.check(summary) for t in thresholds]
    return all(r["ok"] for r in results), results
