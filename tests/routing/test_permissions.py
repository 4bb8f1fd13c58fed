"""Least privilege in the API: writes honour Django's model permissions."""

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

from routing.models import Provider
from tests.conftest import _token_client
from tests.routing import test_api
from tests.routing.test_api import everything, patch, post, put

pytestmark = pytest.mark.django_db
HALF_HALF = {"weights": {"stable": 50, "canary": 50}, "reason": "ramp"}
registry = test_api.registry  # the provider, deployments and 90/10 route of the API tests


def user_with(username, *perms, staff=True):
    user = User.objects.create_user(username, f"{username}@example.com", "correct-horse-battery", is_staff=staff)
    for perm in perms:
        app_label, codename = perm.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return User.objects.get(pk=user.pk)  # a fresh object: permissions are cached per instance


@pytest.fixture
def weights_operator(db):
    """Staff allowed to move weights (routing.change_routetarget) and nothing else."""
    return _token_client(user_with("wendy", "routing.change_routetarget"))


@pytest.fixture
def bare_staff(db):
    """Staff without any model permission."""
    return _token_client(user_with("stan"))


def test_a_weights_operator_moves_weights(weights_operator, registry):
    response = put(weights_operator, "/routes/chat/weights", HALF_HALF)
    assert response.status_code == 200, response.json()
    assert registry.weights() == {"canary": 50, "stable": 50}


def test_a_weights_operator_cannot_change_a_providers_base_url(weights_operator, registry):
    before = everything()
    response = patch(weights_operator, "/providers/sim", {"base_url": "https://attacker.example.com/v1", "reason": "x"})
    assert response.status_code == 403
    assert everything() == before


def test_a_weights_operator_cannot_replace_route_targets_or_create_things(weights_operator, registry):
    before = everything()
    targets = [{"deployment": "stable", "weight": 100}]
    assert patch(weights_operator, "/routes/chat", {"targets": targets}).status_code == 403
    new_provider = {"name": "new", "base_url": "https://api.example.com/v1"}
    assert post(weights_operator, "/providers", new_provider).status_code == 403
    assert everything() == before


def test_staff_without_model_permissions_can_read_but_not_write(bare_staff, registry):
    assert bare_staff.get("/api/v1/providers").status_code == 200
    before = everything()
    assert put(bare_staff, "/routes/chat/weights", HALF_HALF).status_code == 403
    assert bare_staff.delete("/api/v1/routes/chat").status_code == 403
    assert everything() == before


def test_route_editors_need_the_weights_permission_too_to_replace_targets(registry):
    editor = _token_client(user_with("eddie", "routing.change_route"))
    targets = [{"deployment": "stable", "weight": 100}]
    assert patch(editor, "/routes/chat", {"description": "main chat"}).status_code == 200
    assert patch(editor, "/routes/chat", {"targets": targets}).status_code == 403
    both = _token_client(user_with("bea", "routing.change_route", "routing.change_routetarget"))
    assert patch(both, "/routes/chat", {"targets": targets}).status_code == 200


def test_a_provider_editor_changes_a_provider(registry):
    editor = _token_client(user_with("pat", "routing.change_provider"))
    change = {"read_timeout": 30, "base_url": "http://127.0.0.1:10/v1", "reason": "moved"}
    response = patch(editor, "/providers/sim", change)
    assert response.status_code == 200, response.json()
    assert Provider.objects.get().base_url == "http://127.0.0.1:10/v1"


def test_probe_actions_need_the_probe_target_change_permission(registry):
    from probes.models import ProbeTarget

    target = ProbeTarget.objects.first()
    prober = _token_client(user_with("paula", "probes.change_probetarget"))
    others = _token_client(user_with("otto", "probes.add_probetarget"))
    assert others.post(f"/api/v1/probe-targets/{target.pk}/pause", {}, format="json").status_code == 403
    assert prober.post(f"/api/v1/probe-targets/{target.pk}/pause", {}, format="json").status_code == 200


def test_a_deactivated_users_token_stops_working(admin_user, registry):
    client = _token_client(admin_user)
    User.objects.filter(pk=admin_user.pk).update(is_active=False)
    assert client.get("/api/v1/providers").status_code == 401


def test_the_routes_page_offers_the_slider_only_to_those_who_may_move_weights(registry):
    for username, perms, enabled in (("wendy", ["routing.change_routetarget"], True), ("stan", [], False)):
        browser = Client()
        browser.force_login(user_with(username, *perms))
        page = browser.get("/routes/").content.decode()
        assert ("only users allowed to move weights" not in page) is enabled


def test_a_non_staff_user_with_model_permissions_still_cannot_write(registry):
    outsider = _token_client(user_with("nina", "routing.change_routetarget", "routing.change_provider", staff=False))
    before = everything()
    assert put(outsider, "/routes/chat/weights", HALF_HALF).status_code == 403
    assert patch(outsider, "/providers/sim", {"notes": "x"}).status_code == 403
    assert everything() == before
