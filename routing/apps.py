from django.apps import AppConfig


class RoutingConfig(AppConfig):
    name = "routing"
    verbose_name = "Routing registry"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from routing import signals, tokens  # noqa: F401  (config-change notices; tokens end with a password)
