"""Pages of alert delivery (under /alerts/)."""

from django.urls import path

from dashboard.alerts import views

urlpatterns = [
    path("channels/", views.channels, name="alert-channels"),
    path("channels/<int:pk>/test/", views.send_test, name="alert-channel-test"),
]
