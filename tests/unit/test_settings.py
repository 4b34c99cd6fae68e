"""Settings: importing them creates nothing, and production settings pass `check --deploy`."""

from __future__ import annotations

import os
import secrets
import string
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def settings_value(*, env: dict[str, str], expression: str) -> str:
    """Import portal.settings in a fresh process with ``env`` and print ``expression``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PORTAL_"))}
    result = subprocess.run(
        [sys.executable, "-c", f"import portal.settings as s; print({expression})"],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.strip()


def test_importing_settings_creates_no_folder_and_no_file(tmp_path: Path) -> None:
    var = tmp_path / "var"
    key = settings_value(env={"PORTAL_VAR_DIR": str(var)}, expression="s.SECRET_KEY")
    assert not var.exists()
    # With no key anywhere, every local process derives the same one, marked insecure.
    assert key.startswith("django-insecure-") and len(key) > 50
    again = settings_value(env={"PORTAL_VAR_DIR": str(var)}, expression="s.SECRET_KEY")
    assert again == key


def test_the_secret_key_comes_from_the_environment_then_var(tmp_path: Path) -> None:
    (tmp_path / "secret_key").write_text("key-from-make-up\n")
    env = {"PORTAL_VAR_DIR": str(tmp_path)}
    assert settings_value(env=env, expression="s.SECRET_KEY") == "key-from-make-up"
    env["DJANGO_SECRET_KEY"] = "key-from-env"
    assert settings_value(env=env, expression="s.SECRET_KEY") == "key-from-env"


def test_production_settings_have_no_test_only_values() -> None:
    hashers = settings_value(env={}, expression="getattr(s, 'PASSWORD_HASHERS', None)")
    assert hashers == "None"
    assert settings_value(env={}, expression="s.DATABASES['default'].get('TEST')") == "None"


def test_check_deploy_gives_no_warning_when_served_over_https(tmp_path: Path) -> None:
    key = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(50))
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PORTAL_"))}
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env={
            **clean,
            "DJANGO_SETTINGS_MODULE": "portal.settings",
            "DJANGO_SECRET_KEY": key,
            "PORTAL_HTTPS": "1",
            "DJANGO_ALLOWED_HOSTS": "portal.example.com",
            "PORTAL_VAR_DIR": str(tmp_path / "var"),
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout
    assert not (tmp_path / "var").exists()
