"""System checks that flag unsafe production setups (ids weathervane.W00x) and stop a process that
would misread the stored secrets (weathervane.E001)."""

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register


@register(Tags.security, deploy=True)
def production_setup(app_configs, **kwargs):
    problems = []
    if not settings.DEBUG and not settings.SECRET_KEY_FROM_ENV:
        problems.append(Warning(
            "DEBUG is off but SECRET_KEY is not set; a key generated into the data directory is in use.",
            hint="Set SECRET_KEY to a long random value shared by every process.",
            id="weathervane.W002",
        ))
    if not settings.DEBUG and settings.ALLOW_PRIVATE_UPSTREAMS:
        problems.append(Warning(
            "Provider URLs on private and loopback networks are allowed in production.",
            hint="Unset WEATHERVANE_ALLOW_PRIVATE_UPSTREAMS unless your providers really live on a private network.",
            id="weathervane.W004",
        ))
    if not settings.DEBUG and settings.GATEWAY_LOG_BODIES:
        problems.append(Warning(
            "The gateway's request log keeps message bodies in production.",
            hint="Unset WEATHERVANE_GATEWAY_LOG_BODIES unless you need bodies for debugging; "
                 "they may hold personal data.",
            id="weathervane.W006",
        ))
    if not settings.PUBLIC_URL:
        problems.append(Warning(
            "WEATHERVANE_PUBLIC_URL is not set: alert notifications link to the alerts page by a bare path, which "
            "a mail or chat reader cannot open.",
            hint="Set WEATHERVANE_PUBLIC_URL to this server's address as people reach it, e.g. "
                 "https://weathervane.example.com.",
            id="weathervane.W007",
        ))
    return problems


@register()
def shared_channel_layer(app_configs, **kwargs):
    """Runs in every mode (not only --deploy): a production process without Redis is easy to start by mistake."""
    if settings.DEBUG or settings.CHANNEL_LAYERS["default"]["BACKEND"] != "channels.layers.InMemoryChannelLayer":
        return []
    return [Warning(
        "DEBUG is off but the channel layer is in-memory: live updates reach only the process that made them.",
        hint="Fine for a single process; set REDIS_URL when running several.",
        id="weathervane.W001",
    )]


@register()
def encryption_keys(app_configs, **kwargs):
    """Every manage.py command (serve, gateway, migrate, check, ...) refuses to start with keys the database
    cannot use."""
    from routing.keycheck import KeysDiverge, verify_key_set

    try:
        verify_key_set(wait_s=settings.DB_WAIT_S)
    except KeysDiverge as exc:
        hint = "Every process must have the same WEATHERVANE_FERNET_KEYS."
        return [Error(str(exc), hint=hint, id="weathervane.E001")]
    return []


@register(Tags.security)
def key_file_permissions(app_configs, **kwargs):
    """Runs at every start: a generated key that others can read defeats encryption at rest."""
    problems = []
    for name in settings.LOCAL_SECRET_FILES:
        path = settings.DATA_DIR / name
        if path.exists() and path.stat().st_mode & 0o077:
            problems.append(Error(
                f"{path} can be read or written by other users (mode {path.stat().st_mode & 0o777:o}).",
                hint=f"chmod 600 {path}, and check who could have read it.",
                id="weathervane.E002",
            ))
    return problems
