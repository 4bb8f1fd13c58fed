"""/api/v1/alert-channels/ and /api/v1/alert-deliveries/ (a SimpleRouter: the API root belongs to routing's)."""

from rest_framework.routers import SimpleRouter

from . import views


class AlertsRouter(SimpleRouter):
    def __init__(self):
        super().__init__()
        self.trailing_slash = "/?"  # like the registry API: works with or without the slash


router = AlertsRouter()
router.register("alert-channels", views.ChannelViewSet, basename="alert-channel")
router.register("alert-deliveries", views.DeliveryViewSet, basename="alert-delivery")
urlpatterns = router.urls
