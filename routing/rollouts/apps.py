from django.apps import AppConfig


class RolloutsConfig(AppConfig):
    name = "routing.rollouts"
    label = "rollouts"
    verbose_name = "Staged rollouts"
    default_auto_field = "django.db.models.BigAutoField"
