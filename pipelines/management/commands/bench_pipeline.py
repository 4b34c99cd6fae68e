"""``manage.py bench_pipeline --runs N``: what the pipeline itself costs, beside Celery's hop.

Starts a real Celery worker (one prefork child) on the configured database and broker,
on a queue of its own, and runs ``--runs`` provisions of a blueprint of no-op stages
(no hooks, no databases). From the stages' own timestamps it prints the gap from one
stage's end to the next one's start (median, p95) and the time of a no-op stage
(median); a chain of bare Celery tasks on the same worker, in the same run, gives the
hop that no pipeline can beat. The worker's memory is read after the warm-up and at
the end. With ``--sandbox-runs K`` (default 2) it also provisions the shipped
``sandbox`` blueprint K times (pre_hooks to post_hooks; its create plans need no
approval) and runs the same Terraform commands by hand in one shell, on the same files
and backend. Everything it made (accounts, runs, state schemas, files) is removed.
The last line is ``{"runs", "gap_median_ms", "gap_p95_ms", "noop_stage_ms",
"celery_hop_ms"}``.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from celery import current_app
from django.conf import settings
from django.core.management.base import CommandError, CommandParser
from django.db import connection
from django.test.utils import override_settings

from accounts_app.models import Account, Purpose
from accounts_app.production import system_user
from accounts_app.services import create_or_reuse_account
from pipelines.artifacts import DbArtifactStore
from pipelines.cli import PortalCommand, machine_load
from pipelines.clients.terraform import PgBackend, terraform_environment
from pipelines.clients.terraform.executable import resolve_terraform
from pipelines.models import PipelineRun, RunKind, RunStatus, StageRun
from pipelines.services import DATA_STAGES, start_run
from pipelines.stages.render import TERRAFORM_PREFIX
from pipelines.stages.terraform_support import backend_for, pg_conn_str, state_schema
from pipelines.tasks import BENCH_HOP_TASK
from pipelines.yaml_input import load_config_file

NOOP_BLUEPRINT = "bench-noop"
# Every stage kind that does nothing for a blueprint with no hooks and no databases.
NOOP_STAGES = ["pre_hooks", "db_clone", "dns_cutover", "db_teardown", "post_hooks"]
NOOP_YAML = f"""\
name: {NOOP_BLUEPRINT}
title: Benchmark (no-op stages)
version: "1"
parameters: {{type: object}}
stages: [{", ".join(NOOP_STAGES)}]
"""
WARMUP_RUNS = 2
HOPS = 200
RUN_TIMEOUT_SECONDS = 120.0
LOCK = ".terraform.lock.hcl"
HOP_LINE = re.compile(r"bench hop (\d+) at ([0-9.]+)")


def percentile(values: list[float], share: float) -> float:
    """The nearest-rank percentile (share in 0..1) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(share * len(ordered))))
    return ordered[rank - 1]


def _infrastructure_only(blueprint_yaml: Path) -> None:
    """The sandbox's infrastructure pipeline alone: its data stages clone production's
    database and its zone hook calls AWS, neither of which the Terraform timing is about."""
    blueprint = yaml.safe_load(blueprint_yaml.read_text())
    blueprint.pop("databases", None)
    blueprint["stages"] = [kind for kind in blueprint["stages"] if kind not in DATA_STAGES]
    blueprint["hooks"]["post"] = []
    blueprint_yaml.write_text(yaml.safe_dump(blueprint, sort_keys=False))


def database_url() -> str:
    return pg_conn_str(settings.DATABASES["default"])


def _ms(start: datetime | None, end: datetime | None) -> float:
    assert start is not None and end is not None
    return (end - start).total_seconds() * 1000


class Worker:
    """A ``celery worker`` on a queue of its own, its log in ``log_path``."""

    def __init__(self, *, env: dict[str, str], log_path: Path, queue: str) -> None:
        self.log_path = log_path
        argv = [
            *(sys.executable, "-m", "celery", "-A", "portal", "worker", "--loglevel=INFO"),
            *("--concurrency=1", "--pool=prefork", f"--queues={queue}"),
            *(f"--hostname={queue}@%h", "--without-gossip", "--without-mingle"),
        ]
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                argv,
                cwd=settings.BASE_DIR,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while " ready." not in self.log_path.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise CommandError(f"the worker did not start; see {self.log_path}")
            time.sleep(0.1)

    def _pool_pids(self) -> list[str]:
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        pids = children.read_text().split() if children.exists() else []
        return pids or [str(self.proc.pid)]

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the worker's pool child has used so far: a figure the
        machine's load barely moves, unlike the wall-clock ones."""
        ticks = 0
        for pid in self._pool_pids():
            stat = Path(f"/proc/{pid}/stat")
            if stat.exists():
                # utime and stime, fields 14 and 15 of proc(5)'s stat, after the name.
                fields = stat.read_text().rpartition(")")[2].split()
                ticks += int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def rss_mib(self) -> float:
        """Resident memory of the worker's pool child (the process that runs the stages)."""
        total = 0
        for pid in self._pool_pids():
            status = Path(f"/proc/{pid}/status")
            for line in status.read_text().splitlines() if status.exists() else []:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        return total / 1024

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()


class Command(PortalCommand):
    help = "Time the pipeline's own overhead (stage gaps, a no-op stage) beside a Celery hop."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--runs", type=int, default=20, help="no-op runs to time")
        parser.add_argument(
            "--sandbox-runs",
            type=int,
            default=2,
            help="sandbox provisions to time against the same Terraform commands by hand (0: none)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        runs: int = options["runs"]
        sandbox_runs: int = options["sandbox_runs"]
        if not 1 <= runs <= 10_000:
            raise CommandError("--runs must be from 1 to 10000")
        if not 0 <= sandbox_runs <= 100:
            raise CommandError("--sandbox-runs must be from 0 to 100")
        tag = f"bench-{os.getpid()}"
        self.stdout.write(f"before: {machine_load()}")
        with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as temp:
            root = Path(temp)
            blueprints = root / "blueprints"
            (blueprints / NOOP_BLUEPRINT).mkdir(parents=True)
            (blueprints / NOOP_BLUEPRINT / "blueprint.yaml").write_text(NOOP_YAML)
            shipped = Path(settings.PORTAL_BLUEPRINTS_DIR)
            shutil.copytree(shipped / "sandbox", blueprints / "sandbox")
            _infrastructure_only(blueprints / "sandbox" / "blueprint.yaml")
            env = {
                **os.environ,
                # This process's database and broker (a test's database too), whatever the
                # environment says.
                "DATABASE_URL": database_url(),
                "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
                "PORTAL_BLUEPRINTS_DIR": str(blueprints),
                "PORTAL_CELERY_QUEUE": tag,
                "PORTAL_WORK_DIR": str(root / "work"),
                "PORTAL_LOG_FORMAT": "text",
                "PYTHONUNBUFFERED": "1",
            }
            queue_before = current_app.conf.task_default_queue
            current_app.conf.task_default_queue = tag
            worker = Worker(env=env, log_path=root / "worker.log", queue=tag)
            try:
                with override_settings(PORTAL_BLUEPRINTS_DIR=blueprints):
                    worker.wait_ready()
                    result = self._measure(
                        worker=worker, runs=runs, sandbox_runs=sandbox_runs, tag=tag, root=root
                    )
            finally:
                worker.stop()
                current_app.conf.task_default_queue = queue_before
                self._clean_up(tag)
        self.stdout.write(f"after: {machine_load()}")
        self.stdout.write(json.dumps(result))

    # --- the measurements -----------------------------------------------------------------

    def _measure(
        self, *, worker: Worker, runs: int, sandbox_runs: int, tag: str, root: Path
    ) -> dict[str, Any]:
        owner = system_user()
        account, _ = create_or_reuse_account(
            name=f"{tag}-noop", blueprint=NOOP_BLUEPRINT, config={}, purpose=Purpose.QA, owner=owner
        )
        for _ in range(WARMUP_RUNS):
            self._provision(account)
        rss_start = worker.rss_mib()
        cpu_start = worker.cpu_seconds()
        gaps: list[float] = []
        durations: list[float] = []
        for _ in range(runs):
            run = self._provision(account)
            stages = list(run.stages.order_by("position"))
            durations += [_ms(stage.started_at, stage.finished_at) for stage in stages]
            gaps += [
                _ms(before.finished_at, after.started_at)
                for before, after in itertools.pairwise(stages)
            ]
        rss_end = worker.rss_mib()
        cpu_per_stage_ms = (worker.cpu_seconds() - cpu_start) * 1000 / len(durations)
        hop = self._celery_hop(worker)
        result = {
            "runs": runs,
            "gap_median_ms": round(statistics.median(gaps), 2),
            "gap_p95_ms": round(percentile(gaps, 0.95), 2),
            "noop_stage_ms": round(statistics.median(durations), 2),
            "celery_hop_ms": round(hop, 2),
        }
        self.stdout.write(
            f"{runs} runs of {len(NOOP_STAGES)} no-op stages, {len(gaps)} gaps: "
            f"gap median {result['gap_median_ms']} ms, p95 {result['gap_p95_ms']} ms, "
            f"max {max(gaps):.2f} ms"
        )
        self.stdout.write(
            f"no-op stage: median {result['noop_stage_ms']} ms, "
            f"p95 {percentile(durations, 0.95):.2f} ms"
        )
        self.stdout.write(f"bare Celery hop (median of {HOPS}): {result['celery_hop_ms']} ms")
        self.stdout.write(
            f"worker CPU per no-op stage, Celery's share included: {cpu_per_stage_ms:.1f} ms"
        )
        self.stdout.write(
            f"worker memory (pool child RSS): {rss_start:.1f} MiB after warm-up, "
            f"{rss_end:.1f} MiB after {runs} runs ({rss_end - rss_start:+.1f} MiB)"
        )
        if sandbox_runs:
            self._sandbox(runs=sandbox_runs, tag=tag, root=root)
        return result

    def _provision(self, account: Account) -> PipelineRun:
        run = start_run(account, RunKind.PROVISION, user=account.owner)
        deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
        while True:
            run.refresh_from_db()
            if not run.is_active:
                break
            if time.monotonic() > deadline:
                raise CommandError(f"run #{run.pk} did not finish in {RUN_TIMEOUT_SECONDS:g} s")
            time.sleep(0.02)
        if run.status != RunStatus.SUCCEEDED:
            raise CommandError(f"run #{run.pk} of {account.name} {run.status}: {run.explanation}")
        return run

    def _celery_hop(self, worker: Worker) -> float:
        """Median time between the starts of consecutive bare tasks, each sending the next."""
        offset = worker.log_path.stat().st_size
        current_app.send_task(BENCH_HOP_TASK, args=[HOPS])
        deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
        while True:
            with worker.log_path.open("rb") as log:
                log.seek(offset)
                stamps = dict(HOP_LINE.findall(log.read().decode(errors="replace")))
            if "0" in stamps:
                break
            if time.monotonic() > deadline:
                raise CommandError(f"the Celery hops did not finish; see {worker.log_path}")
            time.sleep(0.05)
        times = [float(stamps[str(n)]) for n in range(HOPS, -1, -1)]
        return statistics.median((b - a) * 1000 for a, b in itertools.pairwise(times))

    def _sandbox(self, *, runs: int, tag: str, root: Path) -> None:
        examples = Path(settings.PORTAL_BLUEPRINTS_DIR) / "sandbox" / "examples"
        config = load_config_file(examples / "demo.yaml")
        portal_s: list[float] = []
        by_hand_s: list[float] = []
        stage_ms: dict[str, list[float]] = {}
        gaps_ms: list[float] = []
        for index in range(runs):
            name = f"{tag}-sbx{index}"
            account, _ = create_or_reuse_account(
                name=name,
                blueprint="sandbox",
                config=dict(config),
                purpose=Purpose.QA,
                owner=system_user(),
            )
            run = self._provision(account)
            stages = list(run.stages.order_by("position"))
            portal_s.append(_ms(stages[0].started_at, stages[-1].finished_at) / 1000)
            for stage in stages:
                stage_ms.setdefault(stage.kind, []).append(_ms(stage.started_at, stage.finished_at))
            gaps_ms += [
                _ms(before.finished_at, after.started_at)
                for before, after in itertools.pairwise(stages)
            ]
            by_hand_s.append(self._by_hand(run=run, root=root / f"by-hand-{index}", tag=tag))
        portal, by_hand = statistics.median(portal_s), statistics.median(by_hand_s)
        each = ", ".join(f"{kind} {statistics.median(ms):.0f}" for kind, ms in stage_ms.items())
        self.stdout.write(
            f"sandbox stages (median ms): {each}; the gaps between them: {sum(gaps_ms) / runs:.0f} "
            "ms a run"
        )
        self.stdout.write(
            f"sandbox provision (pre_hooks to post_hooks, median of {runs}): {portal:.3f} s; "
            f"the same Terraform commands by hand in one shell: {by_hand:.3f} s; "
            f"ratio {portal / by_hand:.2f}"
        )

    def _by_hand(self, *, run: PipelineRun, root: Path, tag: str) -> float:
        """init, plan, show; init, show, apply, output: what the plan and apply stages run,
        as one shell runs them, on the run's rendered files, with state in a schema of its own."""
        plan_dir, apply_dir = root / "plan", root / "apply"
        for directory in (plan_dir, apply_dir):
            DbArtifactStore(run.pk).lay_out(prefix=TERRAFORM_PREFIX, directory=directory)
            (directory / "_portal_backend.tf").write_text('terraform {\n  backend "pg" {}\n}\n')
        backend = backend_for(f"{tag}-hand")
        assert isinstance(backend, PgBackend)
        terraform = shlex.quote(resolve_terraform(terraform_bin=settings.TERRAFORM_BIN).path)
        init = f"{terraform} init -input=false -no-color -reconfigure >/dev/null"
        script = " && ".join(
            [
                f"cd {shlex.quote(str(plan_dir))}",
                init,
                f"{terraform} plan -input=false -no-color -out=plan.bin >/dev/null",
                f"{terraform} show -json -no-color plan.bin >/dev/null",
                f"cp plan.bin {shlex.quote(str(apply_dir))}/",
                f"{{ [ ! -f {LOCK} ] || cp {LOCK} {shlex.quote(str(apply_dir))}/; }}",
                f"cd {shlex.quote(str(apply_dir))}",
                init,
                f"{terraform} show -json -no-color plan.bin >/dev/null",
                f"{terraform} apply -input=false -no-color plan.bin >/dev/null",
                f"{terraform} output -json -no-color >/dev/null",
            ]
        )
        env = {
            **terraform_environment(os.environ),
            **backend.environment(),
            "TF_IN_AUTOMATION": "1",
            "TF_INPUT": "0",
            "CHECKPOINT_DISABLE": "1",
            "TF_CLI_CONFIG_FILE": os.devnull,
        }
        started = time.monotonic()
        done = subprocess.run(["/bin/sh", "-c", script], env=env, capture_output=True, check=False)
        elapsed = time.monotonic() - started
        if done.returncode != 0:
            raise CommandError(f"the Terraform commands by hand failed: {done.stderr[-2000:]!r}")
        return elapsed

    def _clean_up(self, tag: str) -> None:
        accounts = list(Account.objects.filter(name__startswith=f"{tag}-"))
        names = [account.name for account in accounts] + [f"{tag}-hand"]
        StageRun.objects.filter(run__account__in=accounts).delete()
        Account.objects.filter(pk__in=[account.pk for account in accounts]).delete()
        with connection.cursor() as cursor:
            for name in names:
                # state_schema() makes [a-z0-9_] identifiers only.
                cursor.execute(f"DROP SCHEMA IF EXISTS {state_schema(name)} CASCADE")
