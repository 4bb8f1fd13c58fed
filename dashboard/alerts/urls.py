"""The alerts page, its JSON, its silence forms, the channels' test button and the forms of channels, rules and
policies with their previews (included by dashboard/page_urls.py)."""

from django.urls import path

from . import views

urlpatterns = [
    path("alerts/", views.alerts, name="alerts"),
    path("alerts/silences/", views.create_silence, name="alerts-silence-create"),
    path("alerts/silences/<int:pk>/expire/", views.expire_silence, name="alerts-silence-expire"),
    path("alerts/channels/", views.channels, name="alert-channels"),
    path("alerts/channels/<int:pk>/test/", views.send_test, name="alert-channel-test"),
    path("dashboard-data/alerts/", views.alerts_json, name="alerts-data"),
]
for what in ("channels", "rules", "policies"):
    urlpatterns += [
        path(f"alerts/{what}/new/", views.edit_config, {"what": what}, name=f"alerts-{what}-new"),
        path(f"alerts/{what}/<int:pk>/edit/", views.edit_config, {"what": what}, name=f"alerts-{what}-edit"),
        path(f"alerts/{what}/<int:pk>/delete/", views.delete_config, {"what": what}, name=f"alerts-{what}-delete"),
    ]
for what in ("rules", "policies"):
    urlpatterns += [
        path(f"alerts/{what}/preview/", views.preview_config, {"what": what}, name=f"alerts-{what}-preview"),
        path(f"alerts/{what}/<int:pk>/preview/", views.preview_config, {"what": what},
             name=f"alerts-{what}-preview-edit"),
    ]
