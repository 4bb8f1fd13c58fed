"""The dashboard's pages and the JSON they re-read when the live socket (re)connects."""

from django.urls import include, path

from dashboard import views

urlpatterns = [
    path("", views.overview, name="overview"),
    path("deployments/<path:name>/", views.deployment_detail, name="deployment"),
    path("routes/", views.routes, name="routes"),
    path("timeline/", views.timeline_page, name="timeline"),
    path("load-tests/", views.load_tests, name="load-tests"),
    path("load-tests/<int:pk>/", views.load_test_detail, name="load-test"),
    path("tokens/", views.api_tokens, name="api-tokens"),
    path("tokens/<str:token_key>/revoke/", views.revoke_api_token, name="api-token-revoke"),
    path("dashboard-data/overview/", views.overview_json, name="overview-data"),
    path("dashboard-data/deployments/<path:name>/", views.deployment_json, name="deployment-data"),
    path("dashboard-data/routes/", views.routes_json, name="routes-data"),
    path("dashboard-data/timeline/", views.timeline_json, name="timeline-data"),
    path("dashboard-data/load-tests/", views.load_tests_json, name="load-tests-data"),
    path("dashboard-data/load-tests/<int:pk>/", views.load_test_json, name="load-test-data"),
    path("", include("routing.rollouts.urls")),
    path("", include("dashboard.alerts.urls")),
]
