import base64
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

from pipelines.redaction import REDACTED, Redactor, environment_secrets

ROOT = Path(__file__).resolve().parents[2]


def test_known_secrets_and_url_passwords_are_redacted() -> None:
    redact = Redactor(["hunter22", "x"])  # too-short values are ignored, not over-redacted
    text = "password hunter22 in postgres://app:s3cr%40t@db:5432/x and x"
    assert redact(text) == "password [redacted] in postgres://app:[redacted]@db:5432/x and x"


def test_longer_secret_containing_a_shorter_one_is_redacted_whole() -> None:
    redact = Redactor(["abcd", "abcdefgh"])
    assert redact("key=abcdefgh") == "key=[redacted]"


def test_secrets_added_later_are_redacted_from_later_lines() -> None:
    redact = Redactor()
    assert redact("new-password-1") == "new-password-1"
    redact.add("new-password-1")
    assert redact("set new-password-1") == "set [redacted]"


# --- every form of a known secret ---

SECRET = "Pa$s w/rd+Tok3n"


@pytest.mark.parametrize(
    "form",
    [
        SECRET,
        SECRET.upper(),
        SECRET.lower(),
        quote(SECRET, safe=""),
        quote_plus(SECRET),
        base64.b64encode(SECRET.encode()).decode(),
        base64.urlsafe_b64encode(SECRET.encode()).decode(),
        # Inside a longer encoded value, at each alignment (an HTTP basic-auth header).
        base64.b64encode(b"admin:" + SECRET.encode()).decode(),
        base64.b64encode(b"admin1:" + SECRET.encode() + b"!").decode(),
        base64.b64encode(b"admin12:" + SECRET.encode() + b"!!").decode(),
    ],
)
def test_every_form_of_a_known_secret_is_redacted(form: str) -> None:
    redact = Redactor([SECRET])

    out = redact(f"token={form} end")

    assert REDACTED in out
    assert form not in out


def test_the_password_of_a_known_connection_string_is_redacted_alone_and_decoded() -> None:
    redact = Redactor(["postgres://portal:p%40ss-W0rd!@db.internal:5432/state"])

    assert "p@ss-W0rd!" not in redact("password p@ss-W0rd! seen")
    assert "p%40ss-W0rd!" not in redact("password p%40ss-W0rd! seen")


def test_unknown_passwords_in_urls_and_conn_strings_are_redacted() -> None:
    redact = Redactor()

    assert redact("redis://:brokerpw@h:6379/0") == f"redis://:{REDACTED}@h:6379/0"
    assert redact("a https://u:p@h/ b") == f"a https://u:{REDACTED}@h/ b"
    assert "s3cr" not in redact("host=h password='s3cr\\'et x' dbname=d")
    assert redact("see https://example.com/a:b and x@y") == "see https://example.com/a:b and x@y"


def test_redaction_is_linear_on_a_one_megabyte_line() -> None:
    redact = Redactor([f"secret-number-{i}" for i in range(200)])
    hostile = [
        "a" * 1_000_000,
        "://:x" * 200_000,  # every URL start scans towards an '@' that never comes
        "password='x " * 85_000,  # unclosed quotes
        "secret-number-" * 70_000,  # a prefix of every known secret, over and over
        "http://u:" + "p" * 1_000_000,
    ]
    for text in hostile:
        started = time.monotonic()
        redact(text)
        took = time.monotonic() - started
        print(f"redacted {len(text)} characters ({text[:12]!r}...) in {took * 1000:.0f} ms")
        assert took < 5


def test_environment_secrets_come_from_the_values_given() -> None:
    found = environment_secrets(
        database_password="db-pw-1",
        broker_url="redis://:broker-pw@h:6379/0",
        secret_key="django-key",
        connection_urls=["postgresql://u:conn-pw@h/db", "postgresql://h/db"],
        aws_secret_access_key="aws-key",
    )

    assert found == ["db-pw-1", "broker-pw", "django-key", "aws-key", "conn-pw"]


def test_the_redactor_module_does_not_import_django() -> None:
    code = "import sys, pipelines.redaction; print('django' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.stdout.strip() == "False", result.stderr
