"""The defaults: the demo's rules and policy pass the API's own validation, and seed_demo creates them once."""

from io import StringIO

import pytest
from django.core.management import call_command

from dashboard.alerts import defaults
from dashboard.alerts.api.serializers import AlertRuleSerializer, NotificationPolicySerializer
from dashboard.alerts.models import AlertRule, NotificationPolicy

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("rule", defaults.RULES, ids=[r["name"] for r in defaults.RULES])
def test_every_default_rule_is_valid_as_the_api_would_take_it(rule):
    serializer = AlertRuleSerializer(data=rule)
    assert serializer.is_valid(), serializer.errors


def test_the_default_policy_is_valid():
    serializer = NotificationPolicySerializer(data=defaults.POLICY)
    assert serializer.is_valid(), serializer.errors


def test_seed_demo_creates_the_rules_and_the_policy_once():
    call_command("seed_demo", stdout=StringIO())
    call_command("seed_demo", stdout=StringIO())
    assert AlertRule.objects.count() == len(defaults.RULES)
    assert NotificationPolicy.objects.get().name == "everything"
