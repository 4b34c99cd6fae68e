"""Run the whole portal on this machine: web, Celery worker, Celery beat and a local AWS
endpoint (moto), each its own process. Ctrl-C stops them all.

Used by `make up`. Before web, worker and beat start it migrates, seeds the demo users
(seed_demo) and builds the local production to clone (seed_production). With no
DATABASE_URL it runs on the embedded PostgreSQL under var/postgres, which manage.py
started before this command (portal/local_postgres.py) and which stops with it; with no
CELERY_BROKER_URL the broker is a SQLite file under var/. With them set it uses those
servers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from portal import local_postgres
from portal.local import ensure_local_dirs, start_embedded_postgres

STOP_GRACE_SECONDS = 10


class Command(BaseCommand):
    help = "Start web, worker, beat and a local AWS endpoint; Ctrl-C stops them all."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--moto-port", type=int, default=settings.PORTAL_MOTO_PORT)
        parser.add_argument("--no-moto", action="store_true", help="use real AWS, not moto")

    def handle(self, *args: Any, **options: Any) -> None:
        ensure_local_dirs()
        # The server manage.py started (a handle on it, to stop it with the others).
        database = start_embedded_postgres()
        credentials = Path(settings.VAR_DIR) / "demo-credentials.txt"
        processes: dict[str, subprocess.Popen[bytes]] = {}
        try:
            self._run(options=options, credentials=credentials, processes=processes)
        except KeyboardInterrupt:
            self.stdout.write("interrupted during start-up")  # Ctrl-C before the banner
        finally:
            self._stop_all(processes)
            credentials.unlink(missing_ok=True)
            if database is not None:
                local_postgres.stop(database)  # unless another command still uses it
                self.stdout.write("stopped the embedded PostgreSQL")

    def _run(
        self,
        *,
        options: dict[str, Any],
        credentials: Path,
        processes: dict[str, subprocess.Popen[bytes]],
    ) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        credentials.unlink(missing_ok=True)
        call_command("seed_demo", credentials_file=str(credentials))

        # The children inherit this process's environment, plus the local AWS endpoint.
        env = dict(os.environ)
        local_aws = not options["no_moto"] and not settings.AWS_ENDPOINT_URL
        python = sys.executable
        if local_aws:
            endpoint = f"http://127.0.0.1:{options['moto_port']}"
            env.update(
                AWS_ENDPOINT_URL=endpoint,
                AWS_ACCESS_KEY_ID="local",
                AWS_SECRET_ACCESS_KEY="local-secret",  # noqa: S106 - moto accepts any key
                AWS_DEFAULT_REGION=settings.AWS_DEFAULT_REGION,
            )
            # First: building the local production makes its private zone there.
            processes["aws"] = self._start(
                [python, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(options["moto_port"])],
                env=env,
            )
            self._wait_until_up(url=f"{endpoint}/", name="aws", processes=processes)

        # The local production to clone (seed_production): provisioned through the portal,
        # so its Terraform state is in the portal's backend, and its orders database filled
        # with generated data; idempotent. A child process, so it sees the AWS endpoint.
        seeded = subprocess.run(
            [python, "manage.py", "seed_production"], env=env, cwd=settings.BASE_DIR, check=False
        )
        if seeded.returncode != 0:
            raise CommandError(f"seed_production exited with status {seeded.returncode}")

        bind = f"{options['host']}:{options['port']}"
        commands: dict[str, list[str]] = {
            "web": [python, "-m", "gunicorn", "portal.wsgi", "--bind", bind,
                    "--workers", "2", "--threads", "4", "--access-logfile", "-",
                    "--no-control-socket"],  # else a socket in ~/.gunicorn, one for all runs
            "worker": [python, "-m", "celery", "-A", "portal", "worker", "--loglevel=INFO",
                       "--concurrency=2", "--without-gossip", "--without-mingle"],
            "beat": [python, "-m", "celery", "-A", "portal", "beat", "--loglevel=INFO",
                     "--schedule", settings.CELERY_BEAT_SCHEDULE_FILENAME],
        }  # fmt: skip
        for name, argv in commands.items():
            processes[name] = self._start(argv, env=env)
        stopping = False

        def stop(*_: Any) -> None:
            nonlocal stopping
            stopping = True

        self._wait_until_up(url=f"http://{bind}/login/", name="web", processes=processes)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        self._banner(f"http://{bind}/", env.get("AWS_ENDPOINT_URL", "real AWS"), credentials)
        while not stopping:
            for name, process in processes.items():
                if process.poll() is not None:
                    raise CommandError(f"{name} exited with status {process.returncode}")
            time.sleep(0.5)

    def _start(self, argv: list[str], *, env: dict[str, str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(argv, env=env, cwd=settings.BASE_DIR, start_new_session=True)

    def _wait_until_up(
        self, *, url: str, name: str, processes: dict[str, subprocess.Popen[bytes]]
    ) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if processes[name].poll() is not None:
                raise CommandError(f"{name} exited during start-up")
            try:
                with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - our own loopback URL
                    return
            except urllib.error.HTTPError:
                return  # it answers
            except (urllib.error.URLError, OSError):
                time.sleep(0.5)
        raise CommandError(f"{name} did not answer at {url} within 60 s")

    def _banner(self, url: str, aws: str, credentials: Path) -> None:
        lines = ["", "=" * 64, f"  Portal:      {url}", f"  Admin:       {url}admin/",
                 f"  API docs:    {url}api/docs/", f"  AWS (local): {aws}",
                 f"  Database:    {self._database()}"]  # fmt: skip
        if credentials.exists():
            lines += ["  Demo users (passwords shown once):", credentials.read_text().rstrip()]
        else:
            lines += [
                "  Demo users: sales, qa, approver, admin (passwords were shown at first start;",
                "  new ones: python manage.py seed_demo --reset-passwords)",
            ]
        lines += ["  Ctrl-C stops everything.", "=" * 64, ""]
        self.stdout.write("\n".join(lines))
        self.stdout.flush()

    def _database(self) -> str:
        if settings.PORTAL_EMBEDDED_POSTGRES:
            return f"embedded PostgreSQL, socket in {settings.PORTAL_EMBEDDED_POSTGRES_DIR}"
        db = settings.DATABASES["default"]
        return f"PostgreSQL {db['NAME']} on {db['HOST'] or 'localhost'}"

    def _stop_all(self, processes: dict[str, subprocess.Popen[bytes]]) -> None:
        for process in processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for process in processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.stdout.write("stopped web, worker, beat and the local AWS endpoint")
