"""Operations and response headers: /healthz, /metrics, JSON log lines, CSP, no-store,
HTTPS redirects, static files without a wildcard CORS header."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import runpy
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from celery.signals import (
    after_task_publish,
    beat_init,
    task_postrun,
    task_prerun,
    worker_ready,
    worker_shutdown,
)
from django.test import Client
from django.utils import timezone

from pipelines.models import StageStatus
from pipelines.tasks import run_stage
from portal import heartbeats
from portal.logging import JsonFormatter, current_ids, log_context
from portal.models import Component, Heartbeat
from tests.factories import PipelineRunFactory, StageRunFactory, UserFactory

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.django_db


def logged_in(*, staff: bool = False) -> Client:
    client = Client()
    client.force_login(UserFactory(username="staffer" if staff else "sally", is_staff=staff))
    return client


# --- headers ----------------------------------------------------------------------------


def test_every_page_has_a_content_security_policy_without_inline_script() -> None:
    for response in (Client().get("/login/"), logged_in().get("/")):
        assert response.status_code == 200
        policy = response["Content-Security-Policy"]
        assert "default-src 'self'" in policy
        assert "script-src 'self';" in policy  # no 'unsafe-inline', no 'unsafe-eval'
        assert "frame-ancestors 'none'" in policy


def test_the_api_docs_page_has_its_own_policy_and_no_inline_script() -> None:
    response = logged_in().get("/api/docs/")
    assert response.status_code == 200
    policy = response["Content-Security-Policy"]
    assert "script-src 'self';" in policy
    html = response.content.decode()
    assert re.search(r"<script>", html) is None, "Swagger UI must load its script by URL"


def test_logged_in_pages_and_the_api_are_never_cached() -> None:
    assert "no-store" in logged_in().get("/")["Cache-Control"]
    api = Client().get("/api/v1/accounts/")
    assert api.status_code in (401, 403)
    assert "no-store" in api["Cache-Control"]


def test_static_files_have_no_wildcard_cors_header() -> None:
    response = Client().get("/static/portal.css")
    assert response.status_code == 200
    assert "Access-Control-Allow-Origin" not in response


def test_over_https_plain_http_is_redirected_except_the_health_check(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PORTAL_HTTPS", "1")
    production = runpy.run_path(str(ROOT / "portal" / "settings.py"))
    for name in ("SECURE_SSL_REDIRECT", "SECURE_REDIRECT_EXEMPT", "SECURE_PROXY_SSL_HEADER"):
        setattr(settings, name, production[name])
    assert production["SECURE_HSTS_SECONDS"] >= 365 * 24 * 3600
    assert production["SESSION_COOKIE_SECURE"] and production["CSRF_COOKIE_SECURE"]

    login = Client().get("/login/")
    assert login.status_code == 301 and login["Location"] == "https://testserver/login/"
    assert Client().get("/healthz/").status_code == 200  # load balancers call it over HTTP
    assert Client().get("/healthz/x").status_code == 301  # exempt is that path only
    proxied = Client().get("/login/", headers={"X-Forwarded-Proto": "https"})
    assert proxied.status_code == 200


# --- /healthz ----------------------------------------------------------------------------


def test_healthz_reports_database_broker_and_heartbeats() -> None:
    seven_seconds_ago = timezone.now() - timedelta(seconds=7)
    # update_or_create: a session's test worker may have recorded one already.
    Heartbeat.objects.update_or_create(
        component=Component.WORKER, defaults={"at": seven_seconds_ago}
    )
    response = Client().get("/healthz/")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["database"] == "ok" and body["broker"] == "ok"
    assert 6 <= body["worker"]["age_seconds"] < 60
    assert body["beat"] == {"last_heartbeat": None, "age_seconds": None}


def test_healthz_is_503_when_the_broker_is_down(settings: Any) -> None:
    settings.CELERY_BROKER_URL = "redis://:hunter2-secret@127.0.0.1:1/0"  # nothing listens
    response = Client().get("/healthz/")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable" and body["broker"] == "unavailable"
    assert body["database"] == "ok"
    assert b"hunter2" not in response.content and b"127.0.0.1" not in response.content


def test_workers_and_beat_record_heartbeats_from_their_signals() -> None:
    worker_ready.send(sender=None)
    worker_shutdown.send(sender=None)  # worker_ready also started this process's outbox relay
    assert Heartbeat.objects.get(component=Component.WORKER).at > timezone.now() - timedelta(
        seconds=5
    )
    # Beat records at start and then each time it sends a scheduled task.
    after_task_publish.send(sender="pipelines.tasks.reap")
    assert not Heartbeat.objects.filter(component=Component.BEAT).exists()  # not beat
    try:
        beat_init.send(sender=None)
        first = Heartbeat.objects.get(component=Component.BEAT).at
        Heartbeat.objects.filter(component=Component.BEAT).update(at=first - timedelta(hours=1))
        heartbeats._last_recorded.clear()
        after_task_publish.send(sender="pipelines.tasks.reap")
        assert Heartbeat.objects.get(component=Component.BEAT).at >= first
    finally:
        heartbeats._in_beat = False


# --- /metrics ----------------------------------------------------------------------------

SAMPLE = re.compile(r'[a-z_]+(\{([a-z_]+="[^"\\\n]*",?)+\})? -?[0-9.e+]+|[a-z_]+\{[^}]*\} \+Inf')
HELP_OR_TYPE = re.compile(r"# (HELP [a-z_]+ .+|TYPE [a-z_]+ (gauge|counter|histogram))")


def test_metrics_need_staff_or_the_token(settings: Any) -> None:
    settings.PORTAL_METRICS_TOKEN = "scrape-token-1"
    assert Client().get("/metrics").status_code == 403
    assert logged_in().get("/metrics").status_code == 403
    wrong = Client().get("/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403
    scraper = Client().get("/metrics", headers={"Authorization": "Bearer scrape-token-1"})
    assert scraper.status_code == 200
    assert logged_in(staff=True).get("/metrics").status_code == 200
    settings.PORTAL_METRICS_TOKEN = ""
    empty = Client().get("/metrics", headers={"Authorization": "Bearer "})
    assert empty.status_code == 403


def test_metrics_are_prometheus_text_with_runs_queue_and_durations() -> None:
    now = timezone.now()
    run = PipelineRunFactory(status="running")
    StageRunFactory(run=run, kind="plan", started_at=now - timedelta(seconds=3), finished_at=now)
    StageRunFactory(run=run, kind="plan", started_at=now - timedelta(seconds=100), finished_at=now)
    StageRunFactory(run=run, kind="apply", status=StageStatus.QUEUED)
    StageRunFactory(run=run, kind="hooks", status=StageStatus.FAILED, explanation="worker lost")
    response = logged_in(staff=True).get("/metrics")
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    text = response.content.decode()
    for line in text.splitlines():
        assert HELP_OR_TYPE.fullmatch(line) or SAMPLE.fullmatch(line), line
    lines = set(text.splitlines())
    assert 'portal_runs{status="running"} 1' in lines
    assert 'portal_runs{status="failed"} 0' in lines
    assert "portal_stages_queued 1" in lines
    assert "portal_stages_worker_lost 1" in lines
    assert 'portal_stage_duration_seconds_bucket{kind="plan",le="5"} 1' in lines
    assert 'portal_stage_duration_seconds_bucket{kind="plan",le="300"} 2' in lines
    assert 'portal_stage_duration_seconds_bucket{kind="plan",le="+Inf"} 2' in lines
    assert 'portal_stage_duration_seconds_sum{kind="plan"} 103.000' in lines
    assert 'portal_stage_duration_seconds_count{kind="plan"} 2' in lines


# --- JSON log lines -------------------------------------------------------------------


def test_json_log_lines_carry_run_and_stage_ids() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tests.json")
    logger.addHandler(handler)
    try:
        with log_context(run_id=7):
            logger.warning("stage %s started", "plan", extra={"stage_id": 42})
        logger.warning("outside")
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    first, second, third = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "stage plan started"
    assert (first["run_id"], first["stage_id"], first["level"]) == (7, 42, "WARNING")
    assert first["logger"] == "tests.json" and first["time"].endswith("+00:00")
    assert "run_id" not in second and "stage_id" not in second
    assert "ValueError: boom" in third["exception"]


def test_portal_log_format_json_configures_the_handlers(tmp_path: Path) -> None:
    code = "import logging; logging.getLogger('portal.probe').warning('hello %s', 'there')"
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env={**os.environ, "PORTAL_LOG_FORMAT": "json", "PORTAL_VAR_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    entry = json.loads(result.stderr.strip().splitlines()[-1])
    assert entry["message"] == "hello there" and entry["logger"] == "portal.probe"


def test_a_stage_task_logs_with_its_stage_id() -> None:
    task_prerun.send(sender=run_stage, task_id="t1", task=run_stage, args=(5,), kwargs={})
    assert current_ids() == {"stage_id": 5}
    task_postrun.send(sender=run_stage, task_id="t1", task=run_stage, args=(5,), kwargs={})
    assert current_ids() == {}


def test_no_template_has_inline_script_or_event_handler() -> None:
    # The policy allows scripts from /static/ only: inline code would silently not run.
    for template in (ROOT / "templates").rglob("*.html"):
        html = template.read_text()
        inline = re.findall(r"<script(?![^>]*\bsrc=)(?![^>]*application/json)[^>]*>", html)
        assert not inline, f"{template}: inline <script>"
        assert not re.search(r"\son[a-z]+=", html), f"{template}: inline event handler"
