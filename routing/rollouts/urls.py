"""The rollout pages and the JSON their detail re-reads (included by dashboard/page_urls.py)."""

from django.urls import path

from . import views

urlpatterns = [
    path("rollouts/", views.rollouts, name="rollouts"),
    path("rollouts/new/", views.new_rollout, name="rollout-new"),
    path("rollouts/new/preview/", views.preview_rollout, name="rollout-preview"),
    path("rollouts/<int:pk>/", views.rollout_detail, name="rollout"),
    path("rollouts/<int:pk>/<str:gate>/", views.rollout_gate, name="rollout-gate"),
    path("dashboard-data/rollouts/<int:pk>/", views.rollout_json, name="rollout-data"),
]
