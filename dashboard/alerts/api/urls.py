"""/api/v1/ routes of alerting: alerts, rules, silences, windows, policies, inhibit rules, channels and
deliveries (a SimpleRouter: the API root belongs to routing's router)."""

from rest_framework.routers import SimpleRouter

from . import views


class AlertsRouter(SimpleRouter):
    def __init__(self):
        super().__init__()
        self.trailing_slash = "/?"  # like the registry API: works with or without the slash


router = AlertsRouter()
router.register("alerts", views.AlertViewSet, basename="alert")
router.register("alert-rules", views.AlertRuleViewSet, basename="alertrule")
router.register("silences", views.SilenceViewSet, basename="silence")
router.register("maintenance-windows", views.MaintenanceWindowViewSet, basename="maintenancewindow")
router.register("notification-policies", views.NotificationPolicyViewSet, basename="notificationpolicy")
router.register("inhibit-rules", views.InhibitRuleViewSet, basename="inhibitrule")
router.register("alert-channels", views.ChannelViewSet, basename="alert-channel")
router.register("alert-deliveries", views.DeliveryViewSet, basename="alert-delivery")
urlpatterns = router.urls
