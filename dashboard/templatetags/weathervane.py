"""Number formats of the dashboard templates: routing.formats, the one home of how a figure reads
(static/js/live.js mirrors it)."""

from django import template

from routing import formats

register = template.Library()

register.filter("ms", formats.ms)
register.filter("pct", formats.pct)
register.filter("percent", formats.percent)
register.filter("rate", formats.rate)
register.filter("whole", formats.whole)


@register.filter
def get_item(mapping, key):
    return (mapping or {}).get(key)
