"""/api/v1/ routes of probes (a SimpleRouter: the API root belongs to routing's router)."""

from django.urls import re_path
from rest_framework.routers import SimpleRouter

from probes.api import views


class ProbesRouter(SimpleRouter):
    def __init__(self):
        super().__init__()
        self.trailing_slash = "/?"  # like the registry API: works with or without the slash


router = ProbesRouter()
router.register("probe-targets", views.ProbeTargetViewSet, basename="probetarget")
router.register("probe-results", views.ProbeResultViewSet, basename="proberesult")
urlpatterns = [
    re_path(r"^rollups/?$", views.RollupSeriesView.as_view(), name="rollups"),
    *router.urls,
]
