"""/api/v1/rollouts/ (a SimpleRouter: the API root belongs to routing's router)."""

from rest_framework.routers import SimpleRouter

from . import views


class RolloutsRouter(SimpleRouter):
    def __init__(self):
        super().__init__()
        self.trailing_slash = "/?"  # like the registry API: works with or without the slash


router = RolloutsRouter()
router.register("rollouts", views.RolloutViewSet, basename="rollout")
urlpatterns = router.urls
