from django.conf import settings
from rest_framework.permissions import SAFE_METHODS, BasePermission


def is_viewer(user):
    return user.is_authenticated and (user.is_staff or user.groups.filter(name=settings.VIEWER_GROUP).exists())


class StaffWritesViewerReads(BasePermission):
    """Staff may change anything; members of the viewer group may only read."""

    message = "Only staff can change configuration; viewers can read."

    def has_permission(self, request, view):
        user = request.user
        if not user or not user.is_authenticated:
            return False
        if request.method in SAFE_METHODS:
            return is_viewer(user)
        return user.is_staff
