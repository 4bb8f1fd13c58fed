"""The "New rollout" form: its plan templates and default guards, the form's state (what the user typed, as
typed) and the one translation of that state into the API's body, so the page is validated by the API's own
serializer; and the serializer's errors put back next to the fields they name.

Units on the form are the ones people say: allowed regressions in points (rates) or percent (p95s), rate limits
in percent; the API takes fractions (0.005 = +0.5 pp, 0.1 = +10 %).
"""

from dataclasses import dataclass, field

from routing.formats import number

from .analysis import DEFAULT_GUARDS, LIMIT_ONLY_METRICS, RATE_METRICS, Metric
from .api.serializers import MAX_STEPS
from .models import DEFAULT_STEP_TIMEOUT_S


def _steps(weights, dwell_s):
    return [{"weight": w, "min_dwell_s": dwell_s, "min_requests": 0} for w in weights]


def _label(name, steps):
    return f"{name}: " + " → ".join(f"{s['weight']} %" for s in steps)


CAREFUL = _steps([5, 25, 50, 100], 300)
QUICK = _steps([10, 50, 100], 120)
PLAN_TEMPLATES = {"careful": {"label": _label("Careful", CAREFUL), "steps": CAREFUL},
                  "quick": {"label": _label("Quick", QUICK), "steps": QUICK}}
CUSTOM = "custom"
# Guarded unless the user unticks them: what a user feels first (failures, a slow first token, a slow stream).
# The guards a rollout gets when its author says nothing (analysis.DEFAULT_GUARDS), in the form's units.
DEFAULT_ALLOWED = {g["metric"]: f"{g['allowed'] * 100:g}" for g in DEFAULT_GUARDS}
SPARE_ROWS = 2  # blank step rows under the plan, for a form used without JavaScript
NUMBER_FIELDS = ("alpha", "min_canary_requests", "step_timeout_s")
NUMBER_DEFAULTS = {"alpha": "0.01", "min_canary_requests": "100", "step_timeout_s": str(DEFAULT_STEP_TIMEOUT_S)}


def units(metric):
    """Return (unit of `allowed`, unit of `limit`) of a metric as the form shows them; None: not asked."""
    if metric in RATE_METRICS:
        return "pp", "%"
    if metric in LIMIT_ONLY_METRICS:
        return None, ("tokens/s" if metric == Metric.TOKENS_PER_S else "$")
    return "%", "ms"


@dataclass
class FormState:
    """The form as typed: every value a string, so a bad one is shown back exactly as it was entered."""

    route: str = ""
    canary: str = ""
    template: str = "careful"
    rows: list = field(default_factory=list)  # [{kind, weight, min_dwell_s, min_requests}]
    guards: list = field(default_factory=list)  # [{metric, label, on, allowed, limit, allowed_unit, limit_unit}]
    numbers: dict = field(default_factory=lambda: dict(NUMBER_DEFAULTS))


def initial_state(route=""):
    """Return the form a user first sees: the careful plan and the default guards, `route` preselected."""
    state = FormState(route=route, rows=template_rows("careful"))
    state.guards = [_guard_row(m, m in DEFAULT_ALLOWED, DEFAULT_ALLOWED.get(m, ""), "") for m in Metric.values]
    return state


def template_rows(name):
    rows = [{"kind": "weight", **{k: str(v) for k, v in s.items()}} for s in PLAN_TEMPLATES[name]["steps"]]
    return _padded(rows)


def _padded(rows):
    blank = {"kind": "weight", "weight": "", "min_dwell_s": "", "min_requests": ""}
    return rows + [dict(blank) for _ in range(min(SPARE_ROWS, MAX_STEPS - len(rows)))]


def _guard_row(metric, on, allowed, limit):
    allowed_unit, limit_unit = units(metric)
    return {"metric": metric, "label": Metric(metric).label, "on": on, "allowed": allowed, "limit": limit,
            "allowed_unit": allowed_unit, "limit_unit": limit_unit}


def posted_state(post):
    """Return the FormState of a POSTed form (a QueryDict); the chosen template's steps replace the rows."""
    template = post.get("plan_template", CUSTOM)
    rows = template_rows(template) if template in PLAN_TEMPLATES else _padded(_posted_rows(post))
    guards = [_guard_row(m, post.get(f"guard-{m}-on") == "on", post.get(f"guard-{m}-allowed", "").strip(),
                         post.get(f"guard-{m}-limit", "").strip()) for m in Metric.values]
    numbers = {name: post.get(name, "").strip() for name in NUMBER_FIELDS}
    return FormState(post.get("route", ""), post.get("canary", ""), template if template in PLAN_TEMPLATES else CUSTOM,
                     rows, guards, numbers)


def _posted_rows(post):
    rows = []
    for n in range(MAX_STEPS + SPARE_ROWS):
        row = {name: post.get(f"step-{n}-{name}", "").strip() for name in ("weight", "min_dwell_s", "min_requests")}
        kind = "pause" if post.get(f"step-{n}-kind") == "pause" else "weight"
        if kind == "pause" or any(row.values()):
            rows.append({"kind": kind, **row})
    return rows


@dataclass
class Layout:
    """Where each item of the body's lists came from: its plan step's form row, its guard's metric."""

    step_rows: list
    guard_metrics: list


def body(state):
    """Return (the API's create body for `state`, its Layout). Values that are not numbers are passed on as
    typed, so the serializer names them."""
    steps = [(n, _step(row)) for n, row in enumerate(state.rows) if _filled(row)]
    guards = [g for g in state.guards if g["on"]]
    data = {"route": state.route, "canary": state.canary, "plan": [step for _, step in steps],
            "guards": [_guard(g) for g in guards]}
    data |= {name: number(value) for name, value in state.numbers.items() if value}
    return data, Layout([n for n, _ in steps], [g["metric"] for g in guards])


def _filled(row):
    return row["kind"] == "pause" or any(row[name] for name in ("weight", "min_dwell_s", "min_requests"))


def _step(row):
    if row["kind"] == "pause":
        return {"pause": True}
    step = {"weight": number(row["weight"])} if row["weight"] else {}
    return step | {name: number(row[name] or "0") for name in ("min_dwell_s", "min_requests")}


def _guard(row):
    guard = {"metric": row["metric"]}
    if row["allowed_unit"] and row["allowed"]:
        guard["allowed"] = _scaled(row["allowed"], 100)
    if row["limit"]:
        guard["limit"] = _scaled(row["limit"], 100 if row["limit_unit"] == "%" else 1)
    return guard


def _scaled(text, divisor):
    value = number(text)
    return value if isinstance(value, str) or divisor == 1 else round(value / divisor, 12)


def field_errors(errors, layout):
    """Return the serializer's `errors` keyed as the form shows them: a top-level field's name, "steps" (form
    row → messages), "guard" (metric → messages), and "form" for the rest."""
    shown = {"steps": {}, "guard": {}}
    for name, detail in errors.items():
        items = _items(detail)
        if name == "plan" and items:
            shown["steps"] |= {layout.step_rows[n]: _messages(d) for n, d in items}
        elif name == "guards" and items:
            shown["guard"] |= {layout.guard_metrics[n]: _messages(d) for n, d in items}
        else:
            shown["form" if name == "non_field_errors" else name] = _messages(detail)
    return shown


def _items(detail):
    """Return [(index, errors)] of a list's per-item errors (DRF gives a list, or a dict keyed by index), else []."""
    if isinstance(detail, dict) and all(isinstance(k, int) for k in detail):
        return [(n, d) for n, d in detail.items() if d]
    if isinstance(detail, list) and any(isinstance(d, dict) for d in detail):
        return [(n, d) for n, d in enumerate(detail) if d]
    return []


def _messages(detail):
    """Flatten DRF error detail into sentences, naming the inner field where there is one."""
    if isinstance(detail, dict):
        return [m if key == "non_field_errors" else f"{key}: {m}" for key, d in detail.items() for m in _messages(d)]
    if isinstance(detail, list):
        return [m for d in detail for m in _messages(d)]
    return [str(detail)]
