"""`make up` on a fresh clone with no DATABASE_URL, driven through the real processes.

A copy of the checkout in a new folder, an environment without DATABASE_URL,
CELERY_BROKER_URL or any AWS setting, `manage.py run_local` (what `make up` runs
after installing): the embedded PostgreSQL, web, worker, beat and moto start; `sales`
logs in over HTTP and submits the demo sandbox request through the web form,
`approver` approves it on the approvals page, and the sandbox gets masked production
data, a DNS record in its private zone on the local AWS endpoint and a parity report.
Ctrl-C then stops every process, and nothing outside the test's folders has changed.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import boto3
import psutil
import psycopg
import pytest
import requests
from psycopg import sql

from portal.local_postgres import POSTGRES_BIN_PATH

# Two starts of every process, a provision and a refresh: on a loaded machine this may take
# longer than the suite's 300 s limit (about 70-140 s seen here).
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
# Rows of generated production data: enough to mean something, quick to clone. Set
# MAKE_UP_TEST_ROWS=100000 to time the default size.
ROWS = int(os.environ.get("MAKE_UP_TEST_ROWS") or 3000)
BANNER_END = "Ctrl-C stops everything."
START_TIMEOUT = 420  # first start: initdb, migrations, the local production's provision
READY_TIMEOUT = 600
# What the masking rules of the sandbox blueprint's orders database cover.
MASKED_COLUMNS = {
    "customers": ["email", "full_name", "phone", "address", "password_hash", "api_token"],
    "orders": ["customer_email", "shipping_name", "shipping_address"],
    "payments": ["cardholder_name", "card_number", "iban"],
}
# The settings a developer's shell (or this test session) may carry: a fresh user has none.
STRIPPED_PREFIXES = ("DATABASE_", "CELERY_", "PORTAL_", "AWS_", "DJANGO_", "MOTO_", "XDG_RUNTIME")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def folder_modes(*paths: Path) -> dict[Path, int]:
    """The mode of each path and of every folder above it."""
    return {
        folder: folder.stat().st_mode
        for path in paths
        for folder in (path, *path.parents)
        if folder.exists()
    }


def tree_snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    """(mtime, size, mode) of every file and folder under root, but caches of Python."""
    found: dict[str, tuple[int, int, int]] = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in {"__pycache__", ".pytest_cache", ".git"}]
        for name in [*dirs, *files]:
            path = Path(folder) / name
            info = path.lstat()
            found[str(path.relative_to(root))] = (info.st_mtime_ns, info.st_size, info.st_mode)
    return found


def copy_checkout(target: Path) -> None:
    """What a fresh clone of this working tree holds: its tracked and new files."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.decode()
    for relative in filter(None, listed.split("\0")):
        source = ROOT / relative
        if source.is_file() and not relative.startswith("var/"):
            destination = target / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)
    (target / ".venv").symlink_to(Path(sys.prefix))


class FormFields(HTMLParser):
    """The fields a browser would send for the form whose action matches ``action``."""

    def __init__(self, action: str) -> None:
        super().__init__()
        self.action = re.compile(action)
        self.in_form = False
        self.fields: list[tuple[str, str]] = []
        self.actions: list[str] = []
        self._select: str | None = None
        self._options: list[tuple[str, bool]] = []
        self._textarea: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and self.action.fullmatch(a.get("action", "")):
            self.in_form = True
            self.actions.append(a["action"])
        if not self.in_form:
            return
        if tag == "input" and a.get("name") and a.get("type") not in {"submit", "button"}:
            if a.get("type") in {"checkbox", "radio"} and "checked" not in a:
                return
            self.fields.append((a["name"], a.get("value", "on" if "checked" in a else "")))
        elif tag == "select":
            self._select, self._options = a.get("name"), []
        elif tag == "option" and self._select is not None:
            self._options.append((a.get("value", ""), "selected" in a))
        elif tag == "textarea":
            self._textarea = a.get("name")
            self.fields.append((a.get("name", ""), ""))

    def handle_data(self, data: str) -> None:
        if self._textarea is not None and self.fields and self.fields[-1][0] == self._textarea:
            self.fields[-1] = (self._textarea, self.fields[-1][1] + data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "select" and self._select is not None:
            chosen = [v for v, selected in self._options if selected] or [
                v for v, _ in self._options[:1]
            ]
            self.fields.extend((self._select, value) for value in chosen)
            self._select = None
        elif tag == "textarea":
            self._textarea = None
        elif tag == "form":
            self.in_form = False


def form_fields(html: str, action: str) -> FormFields:
    parser = FormFields(action)
    parser.feed(html)
    return parser


class Portal:
    """`manage.py run_local` in its own process group, its output kept line by line."""

    def __init__(self, *, repo: Path, env: dict[str, str], log: Path) -> None:
        self.web_port, self.moto_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.web_port}"
        self.lines: list[str] = []
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "run_local", "--port", str(self.web_port),
             "--moto-port", str(self.moto_port)],
            cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.log.open("w") as out:
            for raw in self.proc.stdout:
                line = raw.decode(errors="replace").rstrip("\n")
                self.lines.append(line)
                out.write(line + "\n")
                out.flush()

    def tail(self, count: int = 60) -> str:
        return "\n".join(self.lines[-count:])

    def wait_for_banner(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while not any(BANNER_END in line for line in self.lines):
            if self.proc.poll() is not None:
                pytest.fail(f"run_local exited with {self.proc.returncode}:\n{self.tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"no banner within {START_TIMEOUT} s:\n{self.tail()}")
            time.sleep(0.5)

    def ctrl_c(self) -> int:
        """SIGINT to run_local's process group, as a terminal's Ctrl-C; its exit status."""
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            return self.proc.wait(timeout=90)
        finally:
            self._reader.join(timeout=10)

    def kill(self) -> None:
        if self.proc.poll() is None:
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                child.kill()
            self.proc.kill()
            self.proc.wait()


def log_in(*, url: str, username: str, password: str) -> requests.Session:
    session = requests.Session()
    page = session.get(f"{url}/login/", timeout=30)
    fields = dict(form_fields(page.text, r".*").fields)
    fields.update(username=username, password=password)
    answer = session.post(
        f"{url}/login/", data=fields, headers={"Referer": f"{url}/login/"}, timeout=30
    )
    assert answer.ok and "/login/" not in answer.url, f"{username} could not log in"
    return session


def csrf_post(session: requests.Session, url: str, data: Any) -> requests.Response:
    return session.post(url, data=data, headers={"Referer": url}, timeout=60)


def explain(session: requests.Session, *, url: str, account: dict[str, Any]) -> str:
    """Each stage of the account's runs with its status and explanation."""
    lines = [f"{account['name']}: {account['status']}"]
    for brief in account["runs"]:
        run = session.get(f"{url}/api/v1/runs/{brief['id']}/", timeout=30).json()
        lines.append(f"run #{run['id']} {run['kind']} {run['status']}")
        lines += [
            f"  {st['kind']} {st['status']} {st.get('explanation') or ''}" for st in run["stages"]
        ]
    return "\n".join(lines)


def assert_masked(*, socket_dir: Path, clone_db: str) -> None:
    """The clone has production's rows, and no source value of a masked column."""
    host = str(socket_dir)
    with (
        psycopg.connect(host=host, user="postgres", dbname=clone_db) as clone,
        psycopg.connect(host=host, user="postgres", dbname="portal_prod_orders") as src,
    ):
        for table, columns in MASKED_COLUMNS.items():
            for column in columns:
                select = sql.SQL("SELECT id, {} FROM {}").format(
                    sql.Identifier(column), sql.Identifier(table)
                )
                source = dict(src.execute(select).fetchall())
                cloned = dict(clone.execute(select).fetchall())
                assert source and len(cloned) == len(source), f"{table}: {len(cloned)} rows"
                kept = [key for key, value in source.items()
                        if value is not None and cloned.get(key) == value]  # fmt: skip
                assert not kept, f"{table}.{column} kept its value in rows {kept[:5]}"
                leaked = (set(source.values()) & set(cloned.values())) - {None}
                assert not leaked, f"{table}.{column}: {sorted(leaked)[:5]}"


def databases(socket_dir: Path) -> set[str]:
    with psycopg.connect(host=str(socket_dir), user="postgres", dbname="postgres") as conn:
        return {row[0] for row in conn.execute("SELECT datname FROM pg_database")}


def running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def local_processes(portal: Portal, var: Path) -> set[int]:
    """Every process of the local run: run_local, its children and the PostgreSQL server."""
    postmaster = int((var / "postgres" / "postmaster.pid").read_text().split()[0])
    pids = {
        portal.proc.pid,
        postmaster,
        *(p.pid for p in psutil.Process(portal.proc.pid).children(recursive=True)),
        *(p.pid for p in psutil.Process(postmaster).children(recursive=True)),
    }
    names = " ".join(" ".join(psutil.Process(pid).cmdline()) for pid in pids)
    for process in ("gunicorn", "worker", "beat", "moto.server", "postgres"):
        assert process in names
    return pids


def stop(portal: Portal, pids: set[int]) -> None:
    """Ctrl-C, then every process of the run is gone."""
    if portal.proc.poll() is not None or not pids:
        portal.kill()
        pytest.fail(f"run_local did not run to the end:\n{portal.tail()}")
    status = portal.ctrl_c()
    print(portal.tail(4))
    assert status == 0, portal.tail()
    deadline = time.monotonic() + 15
    while any(running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [pid for pid in pids if running(pid)] == []


@pytest.fixture
def workspace() -> Iterator[Path]:
    """A folder that others may read and search, as a project folder usually is."""
    folder = Path(tempfile.mkdtemp(prefix="portal-up-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_make_up_on_a_fresh_clone_reaches_a_masked_demo_sandbox_with_dns_and_parity(
    workspace: Path,
) -> None:
    repo, var, home = workspace / "repo", workspace / "var", workspace / "home"
    copy_checkout(repo)
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(STRIPPED_PREFIXES)}
    env.update(
        HOME=str(home),
        PORTAL_VAR_DIR=str(var),
        PORTAL_DEMO_PRODUCTION_ROWS=str(ROWS),
        PYTHONUNBUFFERED="1",
    )
    runtime_dir = Path(tempfile.gettempdir()) / f"runtime-{os.geteuid()}"
    had_runtime_dir = runtime_dir.exists()
    modes_before = folder_modes(workspace, POSTGRES_BIN_PATH, Path.home())
    checkout_before = tree_snapshot(ROOT)

    started = time.monotonic()
    portal = Portal(repo=repo, env=env, log=workspace / "run_local.log")
    pids: set[int] = set()
    try:
        portal.wait_for_banner()
        print(f"\nmake up: first start to the banner: {time.monotonic() - started:.1f} s")
        credentials = dict(
            line.split() for line in (var / "demo-credentials.txt").read_text().splitlines()
        )
        pids = local_processes(portal, var)

        # sales asks for a demo sandbox through the form, with the form's own defaults.
        sales = log_in(url=portal.url, username="sales", password=credentials["sales"])
        form_url = f"{portal.url}/request/sandbox/"
        fields = dict(form_fields(sales.get(form_url, timeout=30).text, "/request/sandbox/").fields)
        fields.update(name="acme-demo", purpose="demo", reason="demo for ACME", submit="1")
        submitted = time.monotonic()
        answer = csrf_post(sales, form_url, fields)
        assert answer.ok, answer.text[-2000:]
        accounts = sales.get(f"{portal.url}/api/v1/accounts/", timeout=30).json()["results"]
        account_id = next(a["id"] for a in accounts if a["name"] == "acme-demo")

        # Someone else approves it (four eyes), on the approvals page.
        approvals = f"{portal.url}/approvals/"
        approver = log_in(url=portal.url, username="approver", password=credentials["approver"])
        approve_forms = form_fields(
            approver.get(approvals, timeout=30).text, r"/approvals/requests/\d+/approve/"
        )
        if approve_forms.actions:  # else the policy approved it on its own
            assert len(approve_forms.actions) == 1, approve_forms.actions
            decided = csrf_post(
                approver, portal.url + approve_forms.actions[0], dict(approve_forms.fields)
            )
            assert decided.ok

        detail_url = f"{portal.url}/api/v1/accounts/{account_id}/"
        deadline = time.monotonic() + READY_TIMEOUT
        while (account := sales.get(detail_url, timeout=30).json())["status"] != "ready":
            assert account["status"] != "failed", explain(sales, url=portal.url, account=account)
            assert time.monotonic() < deadline, explain(sales, url=portal.url, account=account)
            time.sleep(1)
        ready_after = time.monotonic() - submitted
        print(f"make up: from Submit to a ready demo sandbox with its data ({ROWS} rows): "
              f"{ready_after:.1f} s")  # fmt: skip

        # Masked production data in the clone: no row keeps the source value of a masked
        # column, and no source value of one is anywhere in the clone.
        clone_db = account["endpoints"]["orders"]["database"]
        assert_masked(socket_dir=var / "postgres", clone_db=clone_db)

        # Terraform state in the portal's database, as in production: one schema an account.
        with psycopg.connect(host=str(var / "postgres"), user="postgres", dbname="portal") as db:
            states = {
                schema: db.execute(
                    sql.SQL("SELECT count(*) FROM {}.states").format(sql.Identifier(schema))
                ).fetchone()
                for schema in ("tfstate_prod", "tfstate_acme_demo")
            }
        assert states == {"tfstate_prod": (1,), "tfstate_acme_demo": (1,)}

        # A DNS record in the sandbox's private zone, on the local AWS endpoint.
        route53 = boto3.client(
            "route53",
            endpoint_url=f"http://127.0.0.1:{portal.moto_port}",
            aws_access_key_id="local",
            aws_secret_access_key="local-secret",
            region_name="us-east-1",
        )
        zone_id = account["outputs"]["private_zone_id"]["value"]
        zone = route53.get_hosted_zone(Id=zone_id)["HostedZone"]
        assert zone["Config"]["PrivateZone"] is True
        records = route53.list_resource_record_sets(HostedZoneId=zone_id)["ResourceRecordSets"]
        record_name = f"orders-db.{account['config']['dns_zone']}."
        assert record_name in {r["Name"] for r in records}, records

        # The parity report against production.
        parity = sales.get(f"{detail_url}parity/", timeout=60)
        assert parity.status_code == 200, parity.text
        report = parity.json()
        assert (report["account"], report["production"], report["purpose"]) == (
            "acme-demo",
            "prod",
            "demo",
        )
        assert report["checked_at"] and report["in_parity"] is True, report
        # What differs from production, and why that is allowed: the network range.
        allowed = {c["path"]: c["reason"] for c in report["checks"] if c["status"] == "allowed"}
        assert allowed.get("cidr"), report["checks"]
        for check in report["checks"]:
            print(f"parity: {check['status']} {check['path']}: {check.get('reason') or ''}")

        # "Refresh data from production" on the account page: a new masked clone, the
        # record kept, the previous clone dropped.
        page = sales.get(f"{portal.url}/accounts/{account_id}/", timeout=30).text
        refresh = form_fields(page, f"/accounts/{account_id}/runs/")
        refreshed = csrf_post(
            sales,
            f"{portal.url}/accounts/{account_id}/runs/",
            {**dict(refresh.fields), "kind": "refresh-data"},
        )
        assert refreshed.ok and "/runs/" in refreshed.url, refreshed.url
        run_url = refreshed.url.replace(portal.url, f"{portal.url}/api/v1").rstrip("/") + "/"
        deadline = time.monotonic() + READY_TIMEOUT
        while (run := sales.get(run_url, timeout=30).json())["status"] != "succeeded":
            assert run["status"] not in {"failed", "cancelled"}, run
            assert time.monotonic() < deadline, run
            time.sleep(1)
        assert run["kind"] == "refresh-data"
        account = sales.get(detail_url, timeout=30).json()
        new_db = account["endpoints"]["orders"]["database"]
        assert new_db != clone_db
        assert_masked(socket_dir=var / "postgres", clone_db=new_db)
        assert clone_db not in databases(var / "postgres")
        records = route53.list_resource_record_sets(HostedZoneId=zone_id)["ResourceRecordSets"]
        assert record_name in {r["Name"] for r in records}
    finally:
        stop(portal, pids)

    # A second `make up` on the same folder starts on what the first left: nothing rebuilt.
    again = Portal(repo=repo, env=env, log=workspace / "run_local-2.log")
    pids = set()
    try:
        again.wait_for_banner()
        pids = local_processes(again, var)
        assert any("are already there: nothing changed" in line for line in again.lines)
        sales = log_in(url=again.url, username="sales", password=credentials["sales"])
        account = sales.get(f"{again.url}/api/v1/accounts/{account_id}/", timeout=30).json()
        assert account["status"] == "ready"
    finally:
        stop(again, pids)

    # Nothing outside the test's folders changed: no folder mode, nothing in the checkout,
    # no lock in the user's runtime folder.
    assert folder_modes(workspace, POSTGRES_BIN_PATH, Path.home()) == modes_before
    assert tree_snapshot(ROOT) == checkout_before
    assert runtime_dir.exists() == had_runtime_dir
    # and nothing in the home folder the processes had.
    assert sorted(str(p.relative_to(home)) for p in home.rglob("*")) == []
