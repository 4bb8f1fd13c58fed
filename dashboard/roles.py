"""Who is who in the project: viewers (settings.VIEWER_GROUP, or staff) look; staff act with Django's model
permissions. The pages, the live socket and the REST API all ask here, so a page never allows what the API
refuses (or the reverse)."""

from django.conf import settings

# Moving traffic between a route's existing targets (slider, PUT .../weights, revert).
WEIGHTS_PERMISSION = "routing.change_routetarget"
# Reading the request and response bodies the gateway logged (WEATHERVANE_GATEWAY_LOG_BODIES).
BODIES_PERMISSION = "routing.view_request_bodies"
# Drafting a rollout, and pressing its gates.
ROLLOUT_CREATE_PERMISSION = "rollouts.add_rollout"
ROLLOUT_PERMISSION = "rollouts.change_rollout"
# Every gate but these moves a route's weights (now, or by the ticks it sets going); an unknown gate counts
# as one that does, so a new gate is never easier to press than the weights it moves.
GATES_KEEPING_WEIGHTS = frozenset({"pause"})


def is_viewer(user):
    return user.is_authenticated and user.is_active and (
        user.is_staff or user.groups.filter(name=settings.VIEWER_GROUP).exists()
    )


def may(user, permissions):
    """Return True when `user` may make a change needing all of `permissions`: an active superuser, or
    active staff holding each of them. The one rule for every write, on a page or through the API."""
    if not (user and user.is_authenticated and user.is_active):
        return False
    return user.is_superuser or (user.is_staff and user.has_perms(permissions))


def model_permissions(model, action):
    """Return the permissions `action` ("add", "change" or "delete") of `model` needs: what the API asks of a POST,
    a PUT or PATCH, a DELETE on its viewset (routing.api.permissions), and what a page's form asks too."""
    opts = model._meta
    return [f"{opts.app_label}.{action}_{opts.model_name}"]


def can_move_weights(user):
    return may(user, [WEIGHTS_PERMISSION])


def rollout_create_permissions():
    """Drafting a rollout needs the weight permission too: starting it moves the route's traffic."""
    return [ROLLOUT_CREATE_PERMISSION, WEIGHTS_PERMISSION]


def can_draft_rollouts(user):
    """The "New rollout" form, its preview and its links: as POST /api/v1/rollouts/ (and its dry run)."""
    return may(user, rollout_create_permissions())


def gate_permissions(gate):
    """Return the permissions pressing `gate` needs: the rollout's, and the weights' unless it keeps them."""
    return [ROLLOUT_PERMISSION] if gate in GATES_KEEPING_WEIGHTS else [ROLLOUT_PERMISSION, WEIGHTS_PERMISSION]


def can_press_gate(user, gate):
    return may(user, gate_permissions(gate))


def can_view_bodies(user):
    """A viewer (or staff) holding BODIES_PERMISSION, or a superuser, reads logged bodies; others see the log
    without them."""
    if not (user and user.is_authenticated and user.is_active):
        return False
    return user.is_superuser or (is_viewer(user) and user.has_perm(BODIES_PERMISSION))
