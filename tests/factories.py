"""The one builder of the world most tests start from: a provider with a key,
deployments "stable" and "canary", and route "chat" split 90/10."""

from types import SimpleNamespace


def canary_world(base_url="http://127.0.0.1:9/v1", weights=(90, 10), secret="sk-test-very-secret-value-1234",
                 key_label="primary", models=("steady", "fast"), provider_name="sim", description=""):
    """Create and return SimpleNamespace(provider, key, stable, canary, route); `secret=None` makes no key."""
    from routing.models import ApiKey, Deployment, Provider, Route, RouteTarget

    provider = Provider.objects.create(name=provider_name, base_url=base_url)
    key = None
    if secret is not None:
        key = ApiKey(provider=provider, label=key_label)
        key.set_secret(secret)
        key.save()
    stable = Deployment.objects.create(name="stable", provider=provider, upstream_model=models[0])
    canary = Deployment.objects.create(name="canary", provider=provider, upstream_model=models[1])
    route = Route.objects.create(name="chat", description=description)
    RouteTarget.objects.create(route=route, deployment=stable, weight=weights[0])
    RouteTarget.objects.create(route=route, deployment=canary, weight=weights[1])
    return SimpleNamespace(provider=provider, key=key, stable=stable, canary=canary, route=route)
