"""HTTP and WebSocket URL patterns (kept side by side; see STYLE.md)."""

from csp.constants import UNSAFE_INLINE
from csp.decorators import csp_update
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerSplitView
from rest_framework.routers import APIRootView

from dashboard.alerts.api.urls import router as alerts_api
from dashboard.consumers import LiveConsumer
from probes.api.urls import router as probes_api
from probes.loadtest.api.urls import router as loadtest_api
from routing.api import errors as api_errors
from routing.api.urls import router as routing_api
from routing.rollouts.api.urls import router as rollouts_api

# The vendored Swagger UI and Redoc inject styles (Redoc also starts from an inline script and a blob: worker);
# only their own pages get that allowance.
DOCS_CSP = csp_update({"style-src": [UNSAFE_INLINE]})
REDOC_CSP = csp_update({"style-src": [UNSAFE_INLINE], "script-src": [UNSAFE_INLINE], "worker-src": ["blob:"]})

# GET /api/v1/ lists every collection of every app's router (each app's own router serves no index).
API_INDEX = {
    **{prefix: f"{basename}-list" for router in (routing_api, probes_api, rollouts_api, loadtest_api, alerts_api)
       for prefix, _, basename in router.registry},
    "rollups": "rollups",
}

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", APIRootView.as_view(api_root_dict=API_INDEX), name="api-root"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("api/v1/", include("routing.api.urls")),
    path("api/v1/", include("probes.api.urls")),
    path("api/v1/", include("routing.rollouts.api.urls")),
    path("api/v1/", include("probes.loadtest.api.urls")),
    path("api/v1/", include("dashboard.alerts.api.urls")),
    re_path(r"^api/v1/", api_errors.not_found),  # after every API route: unknown API URLs get JSON
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", DOCS_CSP(SpectacularSwaggerSplitView.as_view(url_name="schema")), name="api-docs"),
    path("api/redoc/", REDOC_CSP(SpectacularRedocView.as_view(url_name="schema")), name="api-redoc"),
    path("", include("dashboard.page_urls")),
]

websocket_urlpatterns = [
    path("ws/live/", LiveConsumer.as_asgi()),
]
