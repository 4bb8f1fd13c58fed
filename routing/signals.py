"""Config-change notices: any saved or deleted registry object tells every
gateway process to rebuild its snapshot once the transaction commits."""

from django.db import transaction
from django.db.models.signals import m2m_changed, post_delete, post_save
from django.dispatch import receiver

from routing.models import ApiKey, Deployment, GatewayKey, Provider, Route, RouteFallback, RouteTarget

CONFIG_MODELS = (Provider, ApiKey, Deployment, Route, RouteTarget, RouteFallback, GatewayKey)


def config_changed():
    """Announce a config change after commit (the gateway's snapshot module listens)."""
    from routing.gateway import snapshot

    transaction.on_commit(snapshot.announce_change)


@receiver(post_save)
@receiver(post_delete)
def _on_registry_change(sender, **kwargs):
    if sender in CONFIG_MODELS:
        config_changed()


@receiver(m2m_changed, sender=GatewayKey.routes.through)
def _on_gateway_key_routes(sender, **kwargs):
    config_changed()



