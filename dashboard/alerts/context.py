"""The navigation bar's firing count, on every page a signed-in viewer sees."""

from dashboard.roles import is_viewer


def alerts_nav(request):
    user = getattr(request, "user", None)
    if user is None or not is_viewer(user):
        return {}
    from .models import Alert, AlertState

    return {"alerts_firing": Alert.objects.filter(state=AlertState.FIRING, suppressed="").count()}
