"""Weathervane settings: one file, driven by environment variables.

The defaults are the embedded mode (SQLite file, in-memory channel layer,
in-process probes, no broker). Setting DATABASE_URL and REDIS_URL switches to
the scaled mode. Every variable is listed in README.md.
"""

import os
import secrets
import tempfile
from datetime import timedelta
from pathlib import Path

import dj_database_url
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

from dashboard.env import env_bool, env_float, env_int, env_list, env_rate, env_str, env_url

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("WEATHERVANE_DATA_DIR", str(BASE_DIR / "var"))).resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)


LOCAL_SECRET_FILES = ("secret_key", "fernet.key")  # generated here when not set; permissions checked at start


def _local_secret(filename, make):
    """Read a generated secret from the data directory, creating it owner-only on first use."""
    path = DATA_DIR / filename
    if not path.exists():
        _create_once(path, make())
    return path.read_text().strip()


def _create_once(path, value):
    """Write `value` to a private temporary file, then link it into place: a reader never sees an empty key,
    and when two processes race, the first link wins and both use that one."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    try:
        with os.fdopen(handle, "w") as out:
            out.write(value)
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:  # another process made it first
            pass
    finally:
        os.unlink(temporary)


# Production-safe unless asked: `make run` (the demo) sets DEBUG=true explicitly.
DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY") or _local_secret("secret_key", lambda: secrets.token_urlsafe(50))
SECRET_KEY_FROM_ENV = bool(env_str("SECRET_KEY"))
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "knox",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "django_celery_beat",
    "axes",
    "csp",
    "dashboard",
    "dashboard.alerts",
    "routing",
    "routing.rollouts",
    "probes",
    "probes.loadtest",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",  # turns a locked-out login into the lockout page
    "dashboard.outages.DatabaseUnavailableMiddleware",  # last: a database outage is a 503, not a 500
]

ROOT_URLCONF = "dashboard.urls"
ASGI_APPLICATION = "dashboard.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "dashboard.alerts.context.alerts_nav",
            ],
        },
    },
]

# --- Database: SQLite file by default, PostgreSQL with DATABASE_URL ---------
DATABASE_URL = env_url("DATABASE_URL", ("postgres", "postgresql", "sqlite"))
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60, conn_health_checks=True)}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": DATA_DIR / "weathervane.sqlite3",
            "OPTIONS": {
                # WAL and IMMEDIATE transactions let the probe thread and the
                # web process write without "database is locked" errors.
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
            },
            # A file, not shared-cache memory: threads of the test server (gateway,
            # probes, Daphne) then wait on the busy timeout instead of failing
            # with "table is locked".
            "TEST": {"NAME": str(DATA_DIR / f"test-{os.getpid()}.sqlite3")},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: channel layer, cache, shared limits, Celery broker --------------
REDIS_URL = env_url("REDIS_URL", ("redis", "rediss", "unix"))
# How long a request path waits for Redis to connect, and then to answer one command (dashboard/redis_guard.py).
REDIS_TIMEOUT_S = env_float("WEATHERVANE_REDIS_TIMEOUT", 0.05, minimum=0.001)
if REDIS_URL:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [REDIS_URL]}}}
    # The API's throttle counters: served from this process's memory while Redis does not answer.
    CACHES = {"default": {"BACKEND": "dashboard.cache.RedisCacheWithFallback", "LOCATION": REDIS_URL}}
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

CELERY_BROKER_URL = env_url("CELERY_BROKER_URL", ("redis", "rediss", "amqp", "amqps", "memory"), REDIS_URL or "memory://")
CELERY_RESULT_BACKEND = None
CELERY_RESULT_EXPIRES = None  # no results are stored: beat needs no celery.backend_cleanup entry
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Background work rides out broker outages by itself (README "Scaled deployment"): a worker or beat retries
# the broker for ever, at start too. A task under way when the connection dropped runs to its end (the
# threads pool cannot cancel it); its message, unacknowledged, comes back after the visibility timeout, and
# every task is safe to run twice.
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
CELERY_BEAT_SCHEDULER = "dashboard.beat:DatabaseScheduler"  # django-celery-beat's, riding out database outages
CELERY_TIMEZONE = "UTC"

# --- Secrets at rest ---------------------------------------------------------
# Comma-separated Fernet keys; the first encrypts, all decrypt (rotation).
# Never derived from SECRET_KEY. Only the embedded mode (no DATABASE_URL: one
# machine, one data directory) may generate one into DATA_DIR; with a shared
# database every process must be given the same keys, or each would make its own.
FERNET_KEYS_FROM_ENV = bool(env_list("WEATHERVANE_FERNET_KEYS"))
if DATABASE_URL and not FERNET_KEYS_FROM_ENV:
    raise ImproperlyConfigured(
        "WEATHERVANE_FERNET_KEYS must be set when DATABASE_URL is set: every process sharing the database needs "
        "the same secret-encryption key (make one with: python -c 'from cryptography.fernet import Fernet; "
        "print(Fernet.generate_key().decode())')."
    )


def _new_fernet_key():
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


FERNET_KEYS = env_list("WEATHERVANE_FERNET_KEYS") or [_local_secret("fernet.key", _new_fernet_key)]
# Seconds a starting process waits for a database that is not up yet before it checks the keys (routing/keycheck.py).
DB_WAIT_S = env_float("WEATHERVANE_DB_WAIT", 5.0, minimum=0.0)
# Named in error messages: where this process's keys came from.
FERNET_KEYS_SOURCE = "WEATHERVANE_FERNET_KEYS" if FERNET_KEYS_FROM_ENV else str(DATA_DIR / "fernet.key")

# --- Upstream safety ---------------------------------------------------------
# Provider base URLs on loopback/private networks are refused unless allowed.
# Allowed by default only with DEBUG=true (the demo), where the simulator is local.
ALLOW_PRIVATE_UPSTREAMS = env_bool("WEATHERVANE_ALLOW_PRIVATE_UPSTREAMS", DEBUG)

# --- Embedded mode: the built-in simulator served beside the app -------------
SIMULATOR_PORT = env_int("WEATHERVANE_SIMULATOR_PORT", 8001, minimum=1, maximum=65535)

# --- Load tests ----------------------------------------------------------------
# Where runs started from the API and dashboard reach the gateway; empty: WEATHERVANE_GATEWAY_URL, else the
# address `serve` bound (never the request's Host header); with none of them, such runs are refused.
LOADTEST_GATEWAY_URL = env_url("WEATHERVANE_LOADTEST_GATEWAY_URL", ("http", "https")).rstrip("/")
# The most a run started from the API or the pages may spend by its estimate (US$; retries, fallbacks and
# shadow copies included); one over it is refused.
LOADTEST_MAX_SPEND = env_float("WEATHERVANE_LOADTEST_MAX_SPEND", 10.0, minimum=0.0)
# `serve` sends this many demo requests per second through the gateway on the demo route (0: none).
DEMO_TRAFFIC_RPS = env_float("WEATHERVANE_DEMO_TRAFFIC_RPS", 2.0, minimum=0.0)

# --- Probes and the embedded scheduler ---------------------------------------
PROBES_IN_PROCESS = env_bool("WEATHERVANE_PROBES_IN_PROCESS", not REDIS_URL)
PROBE_DEFAULT_INTERVAL_S = env_int("WEATHERVANE_PROBE_INTERVAL", 30, minimum=5)
PROBE_RAW_RETENTION_DAYS = env_int("WEATHERVANE_PROBE_RETENTION_DAYS", 7, minimum=1)
ROLLUP_RETENTION_DAYS = env_int("WEATHERVANE_ROLLUP_RETENTION_DAYS", 90, minimum=1)
# Health with hysteresis (probes.health): a window of the last probes, a minimum sample, entry and exit
# rates with a gap between them, and a run of successes to recover.
PROBE_WINDOW = env_int("WEATHERVANE_PROBE_WINDOW", 30, minimum=5, maximum=200)  # probes judged
PROBE_MIN_SAMPLES = env_int("WEATHERVANE_PROBE_MIN_SAMPLES", 10, minimum=1)
PROBE_DOWN_AFTER = env_int("WEATHERVANE_PROBE_DOWN_AFTER", 4, minimum=1)  # hard failures without a success
PROBE_DOWN_ERROR_RATE = env_float("WEATHERVANE_PROBE_DOWN_ERROR_RATE", 0.7, minimum=0.0, maximum=1.0)
PROBE_UP_AFTER = env_int("WEATHERVANE_PROBE_UP_AFTER", 4, minimum=1)  # successes in a row to recover
PROBE_DEGRADED_LATENCY_MS = env_int("WEATHERVANE_PROBE_DEGRADED_MS", 5000, minimum=1)
PROBE_DEGRADED_ERROR_RATE = env_float("WEATHERVANE_PROBE_DEGRADED_ERROR_RATE", 0.15, minimum=0.0)
PROBE_RECOVERED_ERROR_RATE = env_float("WEATHERVANE_PROBE_RECOVERED_ERROR_RATE", 0.05, minimum=0.0)


def _not_above(*pairs):
    """Raise ImproperlyConfigured naming the first ((name, value), (limit name, limit)) whose value is above its limit:
    the hysteresis needs its gap, and the window room for its counts."""
    for (name, value), (limit_name, limit) in pairs:
        if value > limit:
            raise ImproperlyConfigured(f"{name} ({value}) must not be above {limit_name} ({limit}).")


_not_above(
    (("WEATHERVANE_PROBE_MIN_SAMPLES", PROBE_MIN_SAMPLES), ("WEATHERVANE_PROBE_WINDOW", PROBE_WINDOW)),
    (("WEATHERVANE_PROBE_DOWN_AFTER", PROBE_DOWN_AFTER), ("WEATHERVANE_PROBE_WINDOW", PROBE_WINDOW)),
    (("WEATHERVANE_PROBE_UP_AFTER", PROBE_UP_AFTER), ("WEATHERVANE_PROBE_WINDOW", PROBE_WINDOW)),
    (("WEATHERVANE_PROBE_RECOVERED_ERROR_RATE", PROBE_RECOVERED_ERROR_RATE),
     ("WEATHERVANE_PROBE_DEGRADED_ERROR_RATE", PROBE_DEGRADED_ERROR_RATE)),
    (("WEATHERVANE_PROBE_DEGRADED_ERROR_RATE", PROBE_DEGRADED_ERROR_RATE),
     ("WEATHERVANE_PROBE_DOWN_ERROR_RATE", PROBE_DOWN_ERROR_RATE)),
)

PROBE_DISPATCH_EVERY_S = env_int("WEATHERVANE_PROBE_DISPATCH_EVERY", 5, minimum=1)  # celery beat period
ROLLOUT_TICK_EVERY_S = env_int("WEATHERVANE_ROLLOUT_TICK_EVERY", 5, minimum=1)  # celery beat period of rollout ticks
# Verdicts kept per rollout when old data is pruned (besides each step's last one); ~80 minutes of 5 s ticks.
ROLLOUT_VERDICTS_KEPT = env_int("WEATHERVANE_ROLLOUT_VERDICTS_KEPT", 1000, minimum=50)
PROBE_THREADS = env_int("WEATHERVANE_PROBE_THREADS", 8, minimum=1)  # embedded scheduler's probe threads
# Invalid keys are re-checked after KEY_RECHECK_BASE_S, doubling after each failed re-check up to KEY_RECHECK_MAX_S.
KEY_RECHECK_BASE_S = env_int("WEATHERVANE_KEY_RECHECK_BASE", 60, minimum=1)
KEY_RECHECK_MAX_S = env_int("WEATHERVANE_KEY_RECHECK_MAX", 3600, minimum=1)
# Context windows nobody typed are asked of each provider's GET /models and the catalogue this often (probes.windows).
WINDOW_CHECK_EVERY_S = env_int("WEATHERVANE_WINDOW_CHECK_EVERY", 21600, minimum=60)
# Each deployment's prefill support (probes.prefill) is checked again this often, and when its upstream model changes.
PREFILL_RECHECK_S = env_int("WEATHERVANE_PREFILL_RECHECK", 86400, minimum=60)
ALERT_TICK_EVERY_S = env_int("WEATHERVANE_ALERT_TICK_EVERY", 5, minimum=1)  # alert evaluation period (both modes)
ALERT_RESOLVED_KEEP_DAYS = env_int("WEATHERVANE_ALERT_RESOLVED_KEEP_DAYS", 7, minimum=1)  # resolved alerts kept
PUBLIC_URL = env_url("WEATHERVANE_PUBLIC_URL", ("http", "https"))  # absolute links in notifications
# Redis redelivers a message a killed worker never acked after this many seconds
# (a short timeout also needs frequent sweeps for such messages).
_VISIBILITY_TIMEOUT = env_int("WEATHERVANE_CELERY_VISIBILITY_TIMEOUT", 3600, minimum=1)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    # A broker that stops answering (a hung host, a dropped route) is noticed within seconds, not minutes.
    "socket_connect_timeout": 5,
    "socket_timeout": 10,
    "visibility_timeout": _VISIBILITY_TIMEOUT,
    "unacked_restore_interval": max(1, min(10, _VISIBILITY_TIMEOUT // 2)),
    "unacked_restore_throttle": 1 if _VISIBILITY_TIMEOUT < 300 else 10,
}
CELERY_TASK_DEFAULT_QUEUE = env_str("WEATHERVANE_CELERY_QUEUE", "celery")

# --- Alert delivery (dashboard/alerts) ----------------------------------------
# Notifications go out from an in-process worker thread, or as Celery tasks where the probes run on Celery.
ALERT_DELIVERY_IN_PROCESS = env_bool("WEATHERVANE_ALERT_DELIVERY_IN_PROCESS", PROBES_IN_PROCESS)
# Attempts per notification and channel; the waits between them double from the first (40, 80, 160, 320 s).
ALERT_DELIVERY_ATTEMPTS = env_int("WEATHERVANE_ALERT_DELIVERY_ATTEMPTS", 5, minimum=1, maximum=20)
ALERT_DELIVERY_BACKOFF_S = env_int("WEATHERVANE_ALERT_DELIVERY_BACKOFF", 40, minimum=0, maximum=600)
ALERT_DELIVERY_TIMEOUT_S = env_float("WEATHERVANE_ALERT_DELIVERY_TIMEOUT", 10.0, minimum=0.5)  # one attempt, any kind
ALERT_DELIVERY_RETENTION_DAYS = env_int("WEATHERVANE_ALERT_DELIVERY_RETENTION_DAYS", 30, minimum=1)
# Email channels use Django's email backend; SMTP through these.
EMAIL_BACKEND = env_str("WEATHERVANE_EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env_str("WEATHERVANE_EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("WEATHERVANE_EMAIL_PORT", 25, minimum=1, maximum=65535)
EMAIL_HOST_USER = env_str("WEATHERVANE_EMAIL_USER")
EMAIL_HOST_PASSWORD = env_str("WEATHERVANE_EMAIL_PASSWORD")
EMAIL_USE_TLS = env_bool("WEATHERVANE_EMAIL_STARTTLS", False)
EMAIL_USE_SSL = env_bool("WEATHERVANE_EMAIL_SSL", False)
EMAIL_TIMEOUT = ALERT_DELIVERY_TIMEOUT_S
DEFAULT_FROM_EMAIL = env_str("WEATHERVANE_EMAIL_FROM", "weathervane@localhost")
if EMAIL_USE_TLS and EMAIL_USE_SSL:
    raise ImproperlyConfigured("Set at most one of WEATHERVANE_EMAIL_STARTTLS and WEATHERVANE_EMAIL_SSL.")

# --- Gateway -----------------------------------------------------------------
# Where clients reach the gateway when it runs on its own (`manage.py gateway`), ending in /v1;
# empty means /v1 on the control plane's own address. Printed by the demo and `serve`.
GATEWAY_URL = env_url("WEATHERVANE_GATEWAY_URL", ("http", "https")).rstrip("/")
GATEWAY_MAX_BODY_BYTES = env_int("WEATHERVANE_GATEWAY_MAX_BODY", 4 * 1024 * 1024, minimum=1024)
GATEWAY_DEADLINE_S = env_float("WEATHERVANE_GATEWAY_DEADLINE", 120.0, minimum=1.0)
# Mirrored requests of a rollout's shadow step in flight per gateway process; more are dropped (counted).
GATEWAY_SHADOW_MAX_IN_FLIGHT = env_int("WEATHERVANE_GATEWAY_SHADOW_MAX_IN_FLIGHT", 8, minimum=1)
# A deployment's first-token timeout: its explicit override, else a multiple of its recent p99 time to first
# token (probes and traffic, once MIN_SAMPLES are in) between FLOOR and CEILING, else this fixed value.
GATEWAY_FIRST_TOKEN_TIMEOUT_S = env_float("WEATHERVANE_GATEWAY_FIRST_TOKEN_TIMEOUT", 20.0, minimum=0.5)
GATEWAY_FIRST_TOKEN_MULTIPLE = env_float("WEATHERVANE_GATEWAY_FIRST_TOKEN_MULTIPLE", 4.0, minimum=1.0)
GATEWAY_FIRST_TOKEN_FLOOR_S = env_float("WEATHERVANE_GATEWAY_FIRST_TOKEN_FLOOR", 5.0, minimum=0.5)
GATEWAY_FIRST_TOKEN_CEILING_S = env_float("WEATHERVANE_GATEWAY_FIRST_TOKEN_CEILING", 90.0, minimum=0.5)
GATEWAY_FIRST_TOKEN_MIN_SAMPLES = env_int("WEATHERVANE_GATEWAY_FIRST_TOKEN_MIN_SAMPLES", 20, minimum=1)
if GATEWAY_FIRST_TOKEN_FLOOR_S > GATEWAY_FIRST_TOKEN_CEILING_S:
    raise ImproperlyConfigured("WEATHERVANE_GATEWAY_FIRST_TOKEN_FLOOR must not exceed "
                               "WEATHERVANE_GATEWAY_FIRST_TOKEN_CEILING.")
GATEWAY_LOG_SUCCESS_SAMPLE = env_float("WEATHERVANE_GATEWAY_LOG_SAMPLE", 0.01, minimum=0.0)
GATEWAY_LOG_BODIES = env_bool("WEATHERVANE_GATEWAY_LOG_BODIES", False)
GATEWAY_FLUSH_INTERVAL_S = env_float("WEATHERVANE_GATEWAY_FLUSH_INTERVAL", 5.0, minimum=0.1)
# Retries per target before failing over, and attempts per request in all.
GATEWAY_RETRIES_PER_TARGET = env_int("WEATHERVANE_GATEWAY_RETRIES", 1, minimum=0, maximum=10)
GATEWAY_MAX_ATTEMPTS = env_int("WEATHERVANE_GATEWAY_MAX_ATTEMPTS", 6, minimum=1, maximum=50)
# Retries may add at most this share of the request rate (plus a few per second).
GATEWAY_RETRY_BUDGET = env_float("WEATHERVANE_GATEWAY_RETRY_BUDGET", 0.2, minimum=0.0)
# A 429 asking to wait longer than this fails over at once instead of waiting.
GATEWAY_MAX_RETRY_WAIT_S = env_float("WEATHERVANE_GATEWAY_MAX_RETRY_WAIT", 10.0, minimum=0.0)
# Malformed events skipped in one stream before it counts as broken.
GATEWAY_MAX_MALFORMED_EVENTS = env_int("WEATHERVANE_GATEWAY_MAX_MALFORMED_EVENTS", 3, minimum=0, maximum=1000)
GATEWAY_BREAKER_FAILURES = env_int("WEATHERVANE_GATEWAY_BREAKER_FAILURES", 5, minimum=1)
# Short: while a circuit is open the gateway's own one-token trials test it, so waiting costs clients nothing.
GATEWAY_BREAKER_COOLDOWN_S = env_float("WEATHERVANE_GATEWAY_BREAKER_COOLDOWN", 1.0, minimum=0.1)
GATEWAY_BREAKER_MAX_COOLDOWN_S = env_float("WEATHERVANE_GATEWAY_BREAKER_MAX_COOLDOWN", 4.0, minimum=0.1)
# Safety net behind the change notices: how often each gateway process checks the config for changes.
GATEWAY_SNAPSHOT_POLL_S = env_float("WEATHERVANE_GATEWAY_SNAPSHOT_POLL", 1.0, minimum=0.1)
GATEWAY_LIMITS_PREFIX = env_str("WEATHERVANE_GATEWAY_LIMITS_PREFIX", "weathervane")
# A provider with max_concurrency requests in flight: a request waits this long for a slot, then fails over.
GATEWAY_CONCURRENCY_WAIT_S = env_float("WEATHERVANE_GATEWAY_CONCURRENCY_WAIT", 0.5, minimum=0.0)
GATEWAY_LOG_RETENTION_DAYS = env_int("WEATHERVANE_GATEWAY_LOG_RETENTION_DAYS", 7, minimum=1)
# --- Limits of both servers (Daphne: `manage.py serve`; uvicorn: `manage.py gateway`) --------------
SERVER_MAX_HEADER_BYTES = env_int("WEATHERVANE_MAX_HEADER_BYTES", 16384, minimum=1024)
SERVER_HEADER_TIMEOUT_S = env_float("WEATHERVANE_HEADER_TIMEOUT", 10.0, minimum=0.5)
# /metrics (gateway port and Daphne) answers this bearer token or a staff session; without a token only staff.
METRICS_TOKEN = env_str("WEATHERVANE_METRICS_TOKEN")

# --- REST API ----------------------------------------------------------------
# API tokens (django-rest-knox): hashed, named, expiring; `Authorization: Token <token>`.
KNOX_TOKEN_MODEL = "routing.ApiToken"
API_TOKEN_DAYS = env_int("WEATHERVANE_API_TOKEN_DAYS", 90, minimum=1, maximum=3650)  # default lifetime
API_TOKEN_MAX_DAYS = env_int("WEATHERVANE_API_TOKEN_MAX_DAYS", 365, minimum=1, maximum=3650)
REST_KNOX = {"TOKEN_TTL": timedelta(days=API_TOKEN_DAYS), "TOKEN_PREFIX": "wvt_", "AUTH_HEADER_PREFIX": "Token"}
# Behind the one reverse proxy production needs, the client is the address that proxy appended to
# X-Forwarded-For (the right-most entry), not the proxy itself; without a proxy that header is the client's
# own word and never trusted. Throttles (NUM_PROXIES) and lockouts (AXES_CLIENT_IP_CALLABLE) both read it so.
BEHIND_PROXY = env_bool("WEATHERVANE_BEHIND_PROXY", False)
REST_FRAMEWORK = {
    "NUM_PROXIES": 1 if BEHIND_PROXY else 0,
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "routing.api.authentication.LockableTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["routing.api.permissions.ModelPermissionsViewerReads"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "routing.api.pagination.StrictLimitOffsetPagination",
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "PAGE_SIZE": 100,
    "DEFAULT_SCHEMA_CLASS": "routing.api.schema.ContractAutoSchema",
    "EXCEPTION_HANDLER": "routing.api.errors.exception_handler",
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer", "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    "DEFAULT_THROTTLE_CLASSES": [
        "rest_framework.throttling.AnonRateThrottle",
        "rest_framework.throttling.UserRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": env_rate("WEATHERVANE_API_ANON_RATE", "120/min"),
        "user": env_rate("WEATHERVANE_API_USER_RATE", "3000/min"),
    },
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Weathervane API",
    "DESCRIPTION": (
        "Providers, keys, deployments, routes and their canary weights, gateway keys, probes and the audit trail."
    ),
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema and its docs pages follow the API's rule: staff and viewers read, anonymous callers get 401.
    "SERVE_PERMISSIONS": ["routing.api.permissions.ModelPermissionsViewerReads"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # An operation's default tag is its path's first part after /api/v1/ (probe-targets, alerts, load-tests…), not
    # "v1" for every view that names no tag of its own.
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "routing.api.schema.readable_tags"],
    # One schema name per choice set, however many fields use it ("state" means different things).
    "ENUM_NAME_OVERRIDES": {
        "KeyStateEnum": "routing.models.KeyState",
        "CircuitStateEnum": "routing.models.CircuitState",
        "AuditActionEnum": "routing.models.AuditAction",
        "EventKindEnum": "routing.models.EventKind",
        "ProviderKindEnum": "routing.models.ProviderKind",
        "HealthStateEnum": "probes.models.HealthState",
        "AlertSeverityEnum": "dashboard.alerts.models.Severity",
        "OutcomeEnum": "routing.outcomes.Outcome",
        "RolloutStateEnum": "routing.rollouts.models.RolloutState",
        "ChannelKindEnum": "dashboard.alerts.models.ChannelKind",
        "DeliveryOutcomeEnum": "dashboard.alerts.models.DeliveryOutcome",
        "AlertStatusEnum": "dashboard.alerts.message.Status",
    },
}
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("WEATHERVANE_API_MAX_BODY", 256 * 1024, minimum=1024)
# Daphne refuses larger bodies (413) before buffering them: no application here accepts more.
SERVER_MAX_BODY_BYTES = max(GATEWAY_MAX_BODY_BYTES, DATA_UPLOAD_MAX_MEMORY_SIZE)

# --- Auth, i18n, static -------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Login lockouts (django-axes): /login/, /admin/login/ and API tokens, per user name (a token's key) and client
# address (behind WEATHERVANE_BEHIND_PROXY, the forwarded one).
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = env_int("WEATHERVANE_LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("WEATHERVANE_LOGIN_LOCKOUT_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_CLIENT_IP_CALLABLE = "routing.api.authentication.client_address"
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "dashboard.views.locked_out"
AXES_SENSITIVE_PARAMETERS = ["password", "token", "authorization"]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "overview"
LOGOUT_REDIRECT_URL = "login"
VIEWER_GROUP = "viewer"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)
WHITENOISE_USE_FINDERS = True

# --- Production hardening (on whenever DEBUG is off) --------------------------
# HTTPS only: http redirects to https and cookies are secure, so logins fail over plain http.
# Behind a TLS-terminating proxy, trust its X-Forwarded-Proto; for a local trial without TLS
# anywhere, WEATHERVANE_PLAIN_HTTP turns the HTTPS-only parts off (check --deploy says so).
PLAIN_HTTP = env_bool("WEATHERVANE_PLAIN_HTTP", False)
_HTTPS_ONLY = not DEBUG and not PLAIN_HTTP
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", _HTTPS_ONLY)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if BEHIND_PROXY else None
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000 if _HTTPS_ONLY else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = _HTTPS_ONLY
# Preloading is a commitment browsers keep for months: only when the operator asks for it.
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]
SESSION_COOKIE_SECURE = _HTTPS_ONLY
CSRF_COOKIE_SECURE = _HTTPS_ONLY
X_FRAME_OPTIONS = "DENY"
# Strict: the pages load scripts and styles from our own static files only (no inline code, no CDN).
# The API docs pages relax it for themselves (dashboard/urls.py).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [NONE],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}
# Technical 500 pages (DEBUG) mask the password of every URL-valued setting too.
DEFAULT_EXCEPTION_REPORTER_FILTER = "dashboard.debug.CredentialFilter"

LOG_LEVEL = env_str("WEATHERVANE_LOG_LEVEL", "INFO").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        # httpx logs every request at INFO: a line per probe target per interval would drown the log.
        "httpx": {"level": "WARNING"},
        # httpcore and hpack log raw headers at DEBUG, an upstream's echo of the key included: never below WARNING.
        "httpcore": {"level": "WARNING"},
        "hpack": {"level": "WARNING"},
        # Apprise and urllib3 (under it) log notification URLs, tokens in their paths included, below WARNING.
        # Apprise's warnings reach the delivery log through its own result, redacted; never the process log.
        "apprise": {"level": "WARNING", "propagate": False},
        "urllib3": {"level": "WARNING"},
    },
}
