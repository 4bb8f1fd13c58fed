"""/api/v1/ routes of the routing registry."""

from rest_framework.routers import DefaultRouter

from routing.api import views


class RegistryRouter(DefaultRouter):
    """A router whose URLs work with or without the trailing slash (so
    `PUT /api/v1/routes/{name}/weights` is not redirected), and that tries
    detail actions before the plain detail URL, because names may contain "/"."""

    include_format_suffixes = False  # a ".json" suffix would be ambiguous with dotted names
    include_root_view = False  # GET /api/v1/ lists every app's collections (dashboard/urls.py)

    def __init__(self):
        super().__init__()
        self.trailing_slash = "/?"
        list_route, list_actions, detail_route, detail_actions = self.routes
        self.routes = [list_route, list_actions, detail_actions, detail_route]


router = RegistryRouter()
router.register("providers", views.ProviderViewSet, basename="provider")
router.register("keys", views.ApiKeyViewSet, basename="apikey")
router.register("deployments", views.DeploymentViewSet, basename="deployment")
router.register("routes", views.RouteViewSet, basename="route")
router.register("gateway-keys", views.GatewayKeyViewSet, basename="gatewaykey")
router.register("audit", views.AuditEventViewSet, basename="auditevent")
router.register("events", views.EventViewSet, basename="event")
router.register("circuits", views.DeploymentCircuitViewSet, basename="circuit")
router.register("request-log", views.RequestLogViewSet, basename="requestlog")
urlpatterns = router.urls
