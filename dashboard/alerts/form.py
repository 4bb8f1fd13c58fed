"""The alert setup forms of the alerts page: channels, rules and notification policies. Each form keeps what the
user typed (as typed, every value a string), translates it into the API's body and is validated by the API's own
serializer, whose errors are shown back beside the fields they name. Nothing here decides what is valid.

Secrets (a channel's target and signing secret) are never put back on a page: an edit leaves them empty (empty
keeps the stored one) and a refused form asks for them again.
"""

from dataclasses import dataclass, field

from rest_framework import serializers as drf

from routing.formats import number

from .api import serializers as s
from .matching import MatcherInvalid, format_matchers, parse_matchers
from .models import AlertRule, Channel, ChannelKind, ConditionKind, NotificationPolicy, Severity

LABELS = {  # the words the forms use for the API's fields, in error sentences
    "name": "Name", "kind": "Kind", "target": "Target", "secret": "Signing secret", "enabled": "Enabled",
    "description": "Description", "for_s": "For (s)", "severity": "Severity", "labels": "Labels", "params": "Condition",
    "order": "Order", "matchers": "Matchers", "severities": "Severities", "channels": "Channels",
    "group_by": "Group by", "group_wait_s": "Group wait (s)", "group_interval_s": "Group interval (s)",
    "repeat_interval_s": "Repeat interval (s)", "continue_matching": "Continue matching", "form": "Form",
}


@dataclass
class Checked:
    """A posted form: what was typed (`state`), the API's serializer after is_valid, and every error by field
    (the serializer's and the form's own: a label list that is not name=value)."""

    state: dict
    serializer: drf.Serializer
    errors: dict = field(default_factory=dict)


def _listed(text):
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def error_lines(errors):
    """Flatten {field: messages or {inner field: messages}} into ["Field: message"], each naming its field."""
    lines = []
    for name, detail in errors.items():
        label = LABELS.get(name, name)
        if isinstance(detail, dict):
            lines += [f"{label} · {inner}: {m}" for inner, msgs in detail.items() for m in _messages(msgs)]
        else:
            lines += [f"{label}: {m}" for m in _messages(detail)]
    return lines


def _messages(detail):
    """Flatten DRF error detail into sentences, naming the inner field or list item where there is one."""
    if isinstance(detail, dict):
        return [f"{_part(k)}: {m}" for k, d in detail.items() for m in _messages(d)]
    if isinstance(detail, list):
        return [m for d in detail for m in _messages(d)]
    return [str(detail)]


def _part(key):
    return f"item {key + 1}" if isinstance(key, int) else str(key)


def _by_field(errors):
    """The serializer's errors as the forms show them: {field: [sentences]}, the condition's parameters as
    {"params": {parameter: [sentences]}}, the rest under "form"."""
    shown = {}
    for name, detail in errors.items():
        if name == "params" and isinstance(detail, dict):
            shown[name] = {inner: _messages(d) for inner, d in detail.items()}
        else:
            shown["form" if name == "non_field_errors" else name] = _messages(detail)
    return shown


def check(form, post, instance, context=None):
    """Return the Checked form `post` (a QueryDict) of `form`, validated by the API's serializer for `instance`
    (None: a new one)."""
    state = form.posted(post)
    body, own = form.body(state)
    serializer = form.serializer_class(instance, data=body, context=context or {})
    serializer.is_valid()
    return Checked(state, serializer, {**_by_field(serializer.errors), **own})


# --- channels ---------------------------------------------------------------------------------------------------


class ChannelForm:
    model = Channel
    serializer_class = s.ChannelSerializer
    noun = "channel"
    template = "alerts/channel_form.html"

    @staticmethod
    def initial(channel):
        if channel is None:
            return {"name": "", "kind": ChannelKind.WEBHOOK, "enabled": True, "target": "", "secret": ""}
        return {"name": channel.name, "kind": channel.kind, "enabled": channel.enabled, "target": "", "secret": ""}

    @staticmethod
    def posted(post):
        return {"name": post.get("name", "").strip(), "kind": post.get("kind", ""),
                "enabled": post.get("enabled") == "on", "target": "", "secret": "",
                "typed_target": post.get("target", "").strip(), "typed_secret": post.get("secret", "")}

    @staticmethod
    def body(state):
        body = {"name": state["name"], "kind": state["kind"], "enabled": state["enabled"]}
        if state["typed_target"]:
            body["target"] = state["typed_target"]
        if state["typed_secret"]:
            body["secret"] = state["typed_secret"]
        return body, {}

    @staticmethod
    def choices():
        return {"kinds": ChannelKind.choices}


# --- rules ------------------------------------------------------------------------------------------------------


def param_fields(kind):
    """Return the form's fields of a condition kind's parameters, read off its API serializer:
    [{name, widget ("choices", "select" or "number"), options, default, help}]."""
    fields = []
    for name, f in s.PARAMS[kind]().fields.items():
        default = None if f.default is drf.empty else f.default
        if isinstance(f, drf.ListField):
            widget, options = "choices", list(f.child.choices.items())
        elif isinstance(f, drf.ChoiceField):
            widget, options = "select", list(f.choices.items())
        else:
            widget, options = "number", []
        fields.append({"name": name, "widget": widget, "options": options, "default": default,
                       "required": f.required, "help": str(f.help_text or "")})
    return fields


def _param_text(value):
    if isinstance(value, list):
        return [str(v) for v in value]
    return "" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _labels_text(labels):
    return ", ".join(f"{k}={v}" for k, v in (labels or {}).items())


def parse_labels(text):
    """Return {name: value} of 'team=ml, deployment=canary'; raise ValueError naming the part that is not
    name=value (the names and values themselves are checked by the API's LabelsField)."""
    labels = {}
    for part in _listed(text):
        name, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"{part[:70]!r} is not name=value.")
        labels[name.strip()] = value.strip().strip('"')
    return labels


class RuleForm:
    model = AlertRule
    serializer_class = s.AlertRuleSerializer
    noun = "rule"
    template = "alerts/rule_form.html"

    @staticmethod
    def initial(rule):
        if rule is None:
            return {"name": "", "description": "", "kind": ConditionKind.DEPLOYMENT_HEALTH, "for_s": "60",
                    "severity": Severity.WARNING, "enabled": True, "labels": "", "params": RuleForm._defaults()}
        params = RuleForm._defaults()
        params[rule.kind] = {**params[rule.kind], **{k: _param_text(v) for k, v in rule.params.items()}}
        return {"name": rule.name, "description": rule.description, "kind": rule.kind, "for_s": str(rule.for_s),
                "severity": rule.severity, "enabled": rule.enabled, "labels": _labels_text(rule.labels),
                "params": params}

    @staticmethod
    def _defaults():
        return {kind: {f["name"]: _param_text(f["default"]) for f in param_fields(kind)} for kind in s.PARAMS}

    @staticmethod
    def posted(post):
        kind = post.get("kind", "")
        params = RuleForm._defaults()
        if kind in params:
            params[kind] = {f["name"]: (post.getlist(f"param-{kind}-{f['name']}") if f["widget"] == "choices"
                                        else post.get(f"param-{kind}-{f['name']}", "").strip())
                            for f in param_fields(kind)}
        return {"name": post.get("name", "").strip(), "description": post.get("description", "").strip(),
                "kind": kind, "for_s": post.get("for_s", "").strip(), "severity": post.get("severity", ""),
                "enabled": post.get("enabled") == "on", "labels": post.get("labels", "").strip(), "params": params}

    @staticmethod
    def body(state):
        own = {}
        body = {"name": state["name"], "description": state["description"], "kind": state["kind"],
                "for_s": number(state["for_s"] or "0"), "severity": state["severity"], "enabled": state["enabled"]}
        try:
            body["labels"] = parse_labels(state["labels"])
        except ValueError as exc:
            own["labels"] = [str(exc)]
        typed = state["params"].get(state["kind"], {})
        body["params"] = {name: value if isinstance(value, list) else number(value)
                          for name, value in typed.items() if value not in ("", [])}
        return body, own

    @staticmethod
    def choices():
        return {"kinds": ConditionKind.choices, "severities": Severity.choices,
                "param_fields": {kind: param_fields(kind) for kind in s.PARAMS}}


# --- notification policies -----------------------------------------------------------------------------------------


class PolicyForm:
    model = NotificationPolicy
    serializer_class = s.NotificationPolicySerializer
    noun = "policy"
    template = "alerts/policy_form.html"
    NUMBERS = ("order", "group_wait_s", "group_interval_s", "repeat_interval_s")

    @staticmethod
    def initial(policy):
        if policy is None:
            return {"name": "", "order": "100", "matchers": "", "severities": [], "channels": [],
                    "group_by": "alertname, provider", "group_wait_s": "30", "group_interval_s": "300",
                    "repeat_interval_s": str(4 * 3600), "continue_matching": False, "enabled": True}
        return {"name": policy.name, "order": str(policy.order), "matchers": format_matchers(policy.matchers),
                "severities": list(policy.severities), "channels": [c.name for c in policy.channels.all()],
                "group_by": ", ".join(policy.group_by), "continue_matching": policy.continue_matching,
                "enabled": policy.enabled, **{n: str(getattr(policy, n)) for n in PolicyForm.NUMBERS[1:]}}

    @staticmethod
    def posted(post):
        state = {"name": post.get("name", "").strip(), "matchers": post.get("matchers", "").strip(),
                 "severities": post.getlist("severities"), "channels": post.getlist("channels"),
                 "group_by": post.get("group_by", "").strip(),
                 "continue_matching": post.get("continue_matching") == "on", "enabled": post.get("enabled") == "on"}
        return state | {n: post.get(n, "").strip() for n in PolicyForm.NUMBERS}

    @staticmethod
    def body(state):
        own = {}
        body = {"name": state["name"], "severities": state["severities"], "channels": state["channels"],
                "group_by": _listed(state["group_by"]), "continue_matching": state["continue_matching"],
                "enabled": state["enabled"]}
        body |= {n: number(state[n]) for n in PolicyForm.NUMBERS if state[n]}
        try:
            body["matchers"] = parse_matchers(state["matchers"]) if state["matchers"] else []
        except MatcherInvalid as exc:
            own["matchers"] = [str(exc)]
        return body, own

    @staticmethod
    def choices():
        return {"severities": Severity.choices, "channels": list(Channel.objects.values_list("name", flat=True))}


FORMS = {"channels": ChannelForm, "rules": RuleForm, "policies": PolicyForm}
