"""Who may do what through the API.

Reads: staff and members of the viewer group (settings.VIEWER_GROUP).
Writes: staff only, and only with Django's model permissions, as in the admin: POST needs `add_<model>`,
PUT/PATCH `change_<model>`, DELETE `delete_<model>` of the view's model, and
actions may name their own (moving a route's weights needs only
WEIGHTS_PERMISSION, not `change_route` or `change_provider`). Superusers hold
every permission; viewers hold none.
"""

from rest_framework.permissions import SAFE_METHODS, BasePermission

from dashboard.roles import (  # noqa: F401  (the API's names)
    WEIGHTS_PERMISSION,
    can_move_weights,
    is_viewer,
    may,
    model_permissions,
)

METHOD_ACTIONS = {"POST": "add", "PUT": "change", "PATCH": "change", "DELETE": "delete"}


def required_permissions(view, method):
    """Return the permissions a write by `method` on `view` needs (a view's
    `action_permissions` maps action names to their own list)."""
    own = getattr(view, "action_permissions", {}).get(getattr(view, "action", None))
    if own is not None:
        return list(own)
    queryset = getattr(view, "queryset", None)
    if queryset is None or method not in METHOD_ACTIONS:
        return None  # nothing to derive from: only superusers may write
    return model_permissions(queryset.model, METHOD_ACTIONS[method])


class ModelPermissionsViewerReads(BasePermission):
    """Viewers and staff read; writes need the model permission (see the module docstring)."""

    message = "Only staff can change configuration, and only what their permissions allow; viewers can read."

    def has_permission(self, request, view):
        user = request.user
        if not user or not user.is_authenticated or not user.is_active:
            return False
        if request.method in SAFE_METHODS:
            return is_viewer(user) or user.is_superuser
        perms = required_permissions(view, request.method)
        return user.is_superuser if perms is None else may(user, perms)
