"""/api/v1/load-tests/ (a SimpleRouter, like the probes API)."""

from probes.api.urls import ProbesRouter
from probes.loadtest.api import views

router = ProbesRouter()
router.register("load-tests", views.LoadTestRunViewSet, basename="loadtest")
urlpatterns = router.urls
