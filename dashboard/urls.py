"""HTTP and WebSocket URL patterns (kept side by side; see STYLE.md)."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from dashboard.consumers import LiveConsumer

urlpatterns = [
    path("admin/", admin.site.urls),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("api/v1/", include("routing.api.urls")),
    path("api/v1/", include("probes.api.urls")),
    path("api/v1/", include("routing.rollouts.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="api-redoc"),
    path("", include("dashboard.page_urls")),
]

websocket_urlpatterns = [
    path("ws/live/", LiveConsumer.as_asgi()),
]
