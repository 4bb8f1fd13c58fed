from django.apps import AppConfig


class DashboardConfig(AppConfig):
    name = "dashboard"

    def ready(self):
        from dashboard import (
            checks,  # noqa: F401  (registers system checks)
            live,  # noqa: F401  (closes sockets on logout)
        )
