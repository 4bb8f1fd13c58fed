"""Number formats shared by the dashboard templates (static/js/live.js mirrors them)."""

from django import template

register = template.Library()

DASH = "–"


@register.filter
def ms(value):
    """120.4 → "120 ms", 3.21 → "3.2 ms", 2450 → "2.45 s"; None → "–"."""
    if value is None:
        return DASH
    if value >= 1000:
        return f"{value / 1000:.2f} s"
    return f"{value:.1f} ms" if value < 10 else f"{value:.0f} ms"


@register.filter
def pct(value):
    """A ratio as a percentage: 0.0523 → "5.2 %"; None → "–"."""
    if value is None:
        return DASH
    return f"{value * 100:.1f} %"


@register.filter
def rate(value):
    """A per-second rate: 0.4 → "0.40/s", 12.3 → "12.3/s", 0.004 → "< 0.01/s" (not "0.00/s"), 0 → "0/s"; None → "–"."""
    if value is None:
        return DASH
    if value == 0:
        return "0/s"
    if value < 0.01:
        return "< 0.01/s"
    return f"{value:.2f}/s" if value < 10 else f"{value:.1f}/s"


@register.filter
def get_item(mapping, key):
    return (mapping or {}).get(key)
