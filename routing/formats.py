"""How numbers read, everywhere a person sees one: pages (the `weathervane` template filters), sentences
(a rollout's verdicts, the load-test command) and, mirrored line for line, static/js/live.js.

One format per kind of figure: a ratio reads "5.2 %", a latency "120 ms" or "2.45 s", a rate "0.40/s", a
count "12,345". A missing figure reads "–".
"""

import math

DASH = "–"


def _missing(value):
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def pct(ratio):
    """A ratio as a percentage: 0.0523 → "5.2 %"."""
    return DASH if _missing(ratio) else f"{ratio * 100:.1f} %"


def percent(value):
    """A value already in percent (a chart's axis): 5.23 → "5.2 %"."""
    return DASH if _missing(value) else f"{value:.1f} %"


def ms(value):
    """120.4 → "120 ms", 3.21 → "3.2 ms", 2450 → "2.45 s"."""
    if _missing(value):
        return DASH
    if value >= 1000:
        return f"{value / 1000:.2f} s"
    return f"{value:.1f} ms" if value < 10 else f"{value:.0f} ms"


def rate(value):
    """A per-second rate: 0.4 → "0.40/s", 12.3 → "12.3/s", 0.004 → "< 0.01/s" (there was traffic), 0 → "0/s"."""
    if _missing(value):
        return DASH
    if value == 0:
        return "0/s"
    if value < 0.01:
        return "< 0.01/s"
    return f"{value:.2f}/s" if value < 10 else f"{value:.1f}/s"


def whole(value):
    """A count or a figure shown whole: 12345.6 → "12,346", 12.0 → "12" (never "12.0")."""
    return DASH if _missing(value) else f"{round(value):,}"


def number(text):
    """A number typed in a page's form, read back: `text` as an int or a finite float, else as typed (the
    serializer then names the field)."""
    for kind in (int, float):
        try:
            value = kind(text)
        except ValueError:
            continue
        return value if math.isfinite(value) else text
    return text
