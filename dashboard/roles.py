"""Who is who in the project: viewers (settings.VIEWER_GROUP, or staff) look; moving a route's traffic
needs one permission. The pages, the live socket and the REST API all ask here."""

from django.conf import settings

# Moving traffic between a route's existing targets (slider, PUT .../weights, revert).
WEIGHTS_PERMISSION = "routing.change_routetarget"
# Drafting a rollout or pressing its gates, on the pages or through the API: a rollout moves a route's traffic,
# so it takes both.
ROLLOUT_PERMISSIONS = ("rollouts.add_rollout", WEIGHTS_PERMISSION)


def is_viewer(user):
    return user.is_authenticated and user.is_active and (
        user.is_staff or user.groups.filter(name=settings.VIEWER_GROUP).exists()
    )


def can_move_weights(user):
    return user.is_authenticated and user.is_active and (user.is_superuser or user.is_staff) and (
        user.has_perm(WEIGHTS_PERMISSION)
    )


def can_run_rollouts(user):
    return can_move_weights(user) and user.has_perms(ROLLOUT_PERMISSIONS)
