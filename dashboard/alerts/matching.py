"""Label matchers (Alertmanager's = != =~ !~), silences, inhibition and maintenance windows: pure functions over
plain dicts, shared by the engine, the API's validation and the page's silence form."""

import hashlib
import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from routing.patterns import PatternInvalid, compile_pattern

OPS = ("=", "!=", "=~", "!~")
MAX_VALUE = 500  # a matcher's text or regular expression
MAX_TEXT = 4000  # a silence form's matchers, all together
MAX_LABEL_VALUE = 1000  # a regex is not tried on a longer label (no such label is made; none is matched)
LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_TEXT_MATCHER = re.compile(r'^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"?(.*?)"?\s*$')


class MatcherInvalid(ValueError):
    """A matcher that cannot be used; the message says which part and why."""


def check_matcher(matcher):
    """Return the matcher as {name, op, value} or raise MatcherInvalid naming the bad part."""
    if not isinstance(matcher, dict) or set(matcher) - {"name", "op", "value"}:
        raise MatcherInvalid('A matcher is {"name": label, "op": one of = != =~ !~, "value": text}.')
    name, op, value = matcher.get("name"), matcher.get("op", "="), matcher.get("value")
    if not isinstance(name, str) or not LABEL_NAME.match(name):
        raise MatcherInvalid("name: a label name is a letter or _ then letters, digits or _ (at most 64).")
    if op not in OPS:
        raise MatcherInvalid(f"op: use one of {', '.join(OPS)}.")
    if not isinstance(value, str) or len(value) > MAX_VALUE:
        raise MatcherInvalid(f"value: text of at most {MAX_VALUE} characters.")
    if op in ("=~", "!~"):
        try:
            compile_pattern(value)
        except PatternInvalid as exc:
            raise MatcherInvalid(f"value: {exc}") from None
    return {"name": name, "op": op, "value": value}


def parse_matchers(text):
    """Return the matchers of `text` like 'deployment="flaky-gpt", severity=~"crit.*"'; raise MatcherInvalid."""
    if len(text or "") > MAX_TEXT:
        raise MatcherInvalid(f"Keep the matchers under {MAX_TEXT} characters.")
    parts = [part for part in (text or "").split(",") if part.strip()]
    if not parts:
        raise MatcherInvalid('Give at least one matcher, e.g. deployment="flaky-gpt".')
    matchers = []
    for part in parts:
        found = _TEXT_MATCHER.match(part)
        if not found:
            raise MatcherInvalid(f"{part.strip()!r} is not label=value, label!=value, label=~regex or label!~regex.")
        matchers.append(check_matcher({"name": found[1], "op": found[2], "value": found[3]}))
    return matchers


def format_matchers(matchers):
    return ", ".join(f'{m["name"]}{m["op"]}"{m["value"]}"' for m in matchers)


def matches(matcher, labels):
    """Return True when `labels` satisfy one matcher (a missing label reads as "", as in Alertmanager).

    Regexes run on RE2 (linear time). A regex saved before RE2 that it cannot run, or a label over
    MAX_LABEL_VALUE, satisfies neither =~ nor !~: a silence or window built on it then mutes nothing.
    """
    actual = labels.get(matcher["name"], "")
    op, value = matcher.get("op", "="), matcher["value"]
    if op == "=":
        return actual == value
    if op == "!=":
        return actual != value
    if len(actual) > MAX_LABEL_VALUE:
        return False
    try:
        hit = compile_pattern(value).fullmatch(actual) is not None
    except PatternInvalid:
        return False
    return hit if op == "=~" else not hit


def matches_all(matchers, labels):
    return all(matches(m, labels) for m in matchers)


# --- silences: one validation for the page and the API ------------------------------------------------------

MAX_SILENCE = timedelta(days=90)
UNLISTED_VALUES = ("", "x")  # a label outside `known` may be missing, or hold anything


class SilenceInvalid(ValueError):
    """A silence that cannot be saved; `field` names the part at fault."""

    def __init__(self, field, message):
        super().__init__(message)
        self.field = field


def _takes_every_value(matcher, known):
    name = matcher["name"]
    values = known.get(name) or (*UNLISTED_VALUES, matcher["value"])
    return all(matches(matcher, {name: value}) for value in values)


def matches_every_alert(matchers, known):
    """Return True when `matchers` silence any alert at all: each one accepts every value its label takes
    (`known`: {label: its values}, e.g. the rules' names, the severities; any other label may be missing,
    hold anything, or hold the matcher's own value)."""
    return all(_takes_every_value(m, known) for m in matchers)


def check_silence(matchers, starts_at, ends_at, *, match_all, known):
    """Raise SilenceInvalid when a silence runs longer than MAX_SILENCE, or would silence every alert without
    `match_all` saying that is meant."""
    if ends_at - starts_at > MAX_SILENCE:
        raise SilenceInvalid("ends_at", f"A silence lasts at most {MAX_SILENCE.days} days; make a new one after.")
    if not match_all and matches_every_alert(matchers, known):
        raise SilenceInvalid("match_all", "These matchers silence every alert; say match_all (on the page: tick "
                                          "'Silence every alert') if that is meant.")


def fingerprint(labels):
    """Return a stable id of a label set (the same labels always give the same alert)."""
    text = "\x1f".join(f"{k}\x1e{labels[k]}" for k in sorted(labels))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class Inhibitions:
    """The inhibit rules in force for one set of firing alerts, indexed so each alert is checked in O(rules).

    `rules`: InhibitRule-like objects; `firing`: [(fingerprint, labels)] of firing alerts. An alert never
    inhibits itself; equal labels absent on both sides count as equal, as in Alertmanager.
    """

    def __init__(self, rules, firing):
        self.sources = []  # (rule, {equal label values: {source fingerprints}})
        for rule in rules:
            index = {}
            for fp, labels in firing:
                if matches_all(rule.source_matchers, labels):
                    index.setdefault(self._values(rule, labels), set()).add(fp)
            if index:
                self.sources.append((rule, index))

    @staticmethod
    def _values(rule, labels):
        return tuple(labels.get(name, "") for name in rule.equal)

    def muted_by(self, labels, own_fingerprint):
        """Return the name of the first inhibit rule that mutes `labels`, or ""."""
        for rule, index in self.sources:
            found = index.get(self._values(rule, labels))
            if found and (len(found) > 1 or own_fingerprint not in found) and matches_all(rule.target_matchers, labels):
                return rule.name
        return ""


def window_open(window, now):
    """Return True when a maintenance window (one-off or weekly, in its timezone) is open at `now`."""
    if window.kind == "one_off":
        return window.starts_at is not None and window.ends_at is not None and window.starts_at <= now < window.ends_at
    local = now.astimezone(ZoneInfo(window.timezone))
    start, end = window.start_time, window.end_time
    if start is None or end is None:
        return False
    for days_back in (0, 1):  # a window past midnight began on the day before
        day = (local - timedelta(days=days_back)).date()
        if day.weekday() not in window.weekdays:
            continue
        opens = datetime.combine(day, start, tzinfo=local.tzinfo)
        closes = datetime.combine(day + timedelta(days=1) if end <= start else day, end, tzinfo=local.tzinfo)
        if opens <= local < closes:
            return True
    return False
