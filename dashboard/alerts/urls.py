"""The alerts page, its JSON, its silence forms and the channels' test button (included by
dashboard/page_urls.py)."""

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
