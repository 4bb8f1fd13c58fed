from django.apps import AppConfig


class LoadTestConfig(AppConfig):
    name = "probes.loadtest"
    label = "loadtest"
    verbose_name = "Load tests"
    default_auto_field = "django.db.models.BigAutoField"
