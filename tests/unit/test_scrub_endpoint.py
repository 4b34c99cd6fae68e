"""How the scrub step reaches a restored RDS instance (no database, no AWS needed)."""

from __future__ import annotations

from psycopg.conninfo import conninfo_to_dict
from pytest_django.fixtures import Settings

from pipelines.dbclone.scrub import DirectEndpoint, RdsEndpoint, endpoint_resolver

ENDPOINT = RdsEndpoint(
    host="qa-orders-r7.abc.us-east-1.rds.amazonaws.com",
    port=5432,
    user="orders",
    password="new-master-password",
    database="orders",
)


def test_the_default_resolver_connects_to_the_instance_itself_with_tls(settings: Settings) -> None:
    settings.PORTAL_RDS_ENDPOINT_RESOLVER = "pipelines.dbclone.scrub.DirectEndpoint"
    resolver = endpoint_resolver()
    assert isinstance(resolver, DirectEndpoint)
    info = conninfo_to_dict(resolver.url(ENDPOINT))
    assert info == {
        "host": ENDPOINT.host,
        "port": "5432",
        "user": "orders",
        "password": "new-master-password",
        "dbname": "orders",
        "sslmode": "require",
        "connect_timeout": "30",
    }


def test_the_endpoint_never_shows_its_password() -> None:
    assert "new-master-password" not in repr(ENDPOINT)
