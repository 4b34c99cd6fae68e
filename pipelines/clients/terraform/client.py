"""``TerraformClient``: Terraform in one work directory, on the portal's process runner.

Every stage that plans, applies or reads outputs goes through it. It never imports
Django: settings (the Terraform to run, the backend, the work directory) are plain
arguments, so a management command can use it with no database.

Non-interactive always: ``-input=false`` where a command takes it, ``TF_INPUT=0``,
``TF_IN_AUTOMATION=1``, stdin closed, and ``TF_CLI_CONFIG_FILE`` pointing at an
empty file (``/dev/null`` unless ``cli_config_file`` says otherwise).

Secrets: every line the client emits or keeps (``on_line``, ``TerraformError.tail``,
explanations) passes through the ``Redactor`` it was given, to which it adds the
backend's conn string. Two things are NOT redacted because they are data, not logs:
the raw plan JSON (``PlanSummary.raw`` holds sensitive values in clear, as
``terraform show -json`` prints them) and ``output_json()`` values (sensitive outputs
included). Callers must not show those to users as they are.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.clients.process import (
    OnIdle,
    OnLine,
    OnStart,
    ProcessResult,
    ShouldCancel,
    run_process,
)
from pipelines.clients.terraform.backends import Backend, PgBackend, write_backend_file
from pipelines.clients.terraform.errors import (
    TAIL_LINES,
    TerraformCancelled,
    TerraformError,
    classify_failure,
    tail_of,
)
from pipelines.clients.terraform.executable import resolve_terraform
from pipelines.clients.terraform.plan_summary import PlanSummary, summarize_plan
from pipelines.redaction import Redactor

# Lines kept for classifying a failure (the lock error can come early in the output).
_KEEP_LINES = 500
# Variables that would change what our commands mean.
_DROPPED_ENV = ("TF_CLI_ARGS", "TF_WORKSPACE", "TF_DATA_DIR", "PG_CONN_STR", "PG_SCHEMA_NAME")
# Terraform (and a blueprint's local-exec) sees only these from the worker's environment:
# never the portal's database URL, secret key or broker credentials.
_PASSED_ENV_NAMES = frozenset(
    {
        "PATH", "HOME", "LANG", "TMPDIR", "TZ", "USER",
        "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
        "SSL_CERT_FILE", "SSL_CERT_DIR",
    }
)  # fmt: skip
# Cloud provider credentials and Terraform's own settings.
_PASSED_ENV_PREFIXES = ("AWS_", "TF_", "ARM_", "GOOGLE_", "LC_")


def terraform_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """What of ``environ`` (the worker's environment) Terraform may see."""
    return {
        key: value
        for key, value in environ.items()
        if (key in _PASSED_ENV_NAMES or key.startswith(_PASSED_ENV_PREFIXES))
        and key not in _DROPPED_ENV
        and not key.startswith("TF_CLI_ARGS_")
    }


@dataclass
class _Outcome:
    returncode: int
    lines: list[str]  # redacted; the last few hundred
    stdout: str  # only when capturing stdout (JSON commands); not redacted, not emitted


class TerraformClient:
    """Runs Terraform in one work directory, non-interactively, with live output and cancel.

    on_line: called with each output line (stdout and stderr, redacted) as Terraform
        prints it, in the calling thread.
    should_cancel: asked every ``poll_interval`` seconds; when true, Terraform gets
        SIGINT, then ``grace_period`` seconds to stop before it (and its children)
        are killed; the call raises ``TerraformCancelled``.
    on_start: called with the pid of each Terraform process as it starts.
    on_idle: called when Terraform's output pauses after lines came (the runner's).
    backend: when given, ``init()`` writes ``_portal_backend.tf`` for it and every
        command gets its credentials in the environment.
    environ: the environment Terraform's is taken from (``terraform_environment``),
        by default this process's; ``env`` is added on top.
    """

    def __init__(
        self,
        *,
        workdir: Path,
        terraform_bin: str | None = None,
        backend: Backend | None = None,
        redactor: Redactor | None = None,
        on_line: OnLine | None = None,
        should_cancel: ShouldCancel | None = None,
        on_start: OnStart | None = None,
        on_idle: OnIdle | None = None,
        grace_period: float = 30.0,
        poll_interval: float = 0.5,
        lock_timeout: str = "0s",
        environ: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
        cli_config_file: Path | None = None,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.environ = dict(os.environ if environ is None else environ)
        self.executable = resolve_terraform(terraform_bin=terraform_bin, environ=self.environ)
        self.backend = backend
        self.on_line = on_line
        self.should_cancel: Callable[[], bool] = should_cancel or (lambda: False)
        self.on_start = on_start
        self.on_idle = on_idle
        self.grace_period = grace_period
        self.poll_interval = poll_interval
        self.lock_timeout = lock_timeout
        self.extra_env = dict(env or {})
        self.cli_config_file = Path(cli_config_file) if cli_config_file else Path(os.devnull)
        self.redact = redactor if redactor is not None else Redactor()
        if isinstance(backend, PgBackend):
            self.redact.add(backend.conn_str)

    # -- operations --

    def init(self) -> None:
        """``terraform init`` with the portal's backend (written first when one was given).

        ``-reconfigure``: the portal's backend is authoritative, never migrate state
        implicitly from whatever a reused work directory was set up with.
        """
        if self.backend is not None:
            write_backend_file(workdir=self.workdir, backend=self.backend)
        self._checked(command="init", args=["init", "-input=false", "-no-color", "-reconfigure"])

    def validate(self) -> list[str]:
        """Error diagnostics from ``terraform validate`` (after init); empty when valid."""
        outcome = self._run(["validate", "-json", "-no-color"], capture_stdout=True)
        try:
            result = json.loads(outcome.stdout)
        except ValueError:
            raise classify_failure(
                outcome.lines, command="validate", returncode=outcome.returncode
            ) from None
        errors = []
        for diag in result.get("diagnostics") or []:
            if diag.get("severity") != "error":
                continue
            place = ""
            if diag.get("range"):
                place = f"{diag['range'].get('filename')} line {diag['range']['start']['line']}: "
            detail = f": {diag['detail']}" if diag.get("detail") else ""
            errors.append(self.redact(f"{place}{diag.get('summary', '')}{detail}"))
        return errors

    def plan(self, out_path: Path, *, destroy: bool = False) -> PlanSummary:
        """``plan -out=out_path`` (``-destroy`` too when asked), then summarize the saved plan.

        A relative ``out_path`` is relative to the work directory.
        """
        out_path = self._path(out_path)
        args = ["plan", "-input=false", "-no-color", f"-lock-timeout={self.lock_timeout}"]
        if destroy:
            args.append("-destroy")
        args.append(f"-out={out_path}")
        self._checked(command="plan", args=args)
        return self.show_plan(out_path)

    def drift_plan(self, out_path: Path) -> tuple[PlanSummary, bool]:
        """``plan -detailed-exitcode -lock=false`` of the live state: (summary, drifted).

        Exit 0: no changes; 2: the live state differs from the code. Without the state
        lock: a plan never writes state, so the check never holds up a run's apply.
        """
        out_path = self._path(out_path)
        args = ["plan", "-input=false", "-no-color", "-detailed-exitcode", "-lock=false"]
        outcome = self._run([*args, f"-out={out_path}"])
        if outcome.returncode not in (0, 2):
            raise classify_failure(outcome.lines, command="plan", returncode=outcome.returncode)
        return self.show_plan(out_path), outcome.returncode == 2

    def show_plan(self, plan_path: Path) -> PlanSummary:
        """Summarize a saved plan file (``show -json``)."""
        args = ["show", "-json", "-no-color", str(self._path(plan_path))]
        return summarize_plan(self._json(command="show", args=args))

    def apply(self, plan_path: Path) -> None:
        """Apply exactly the saved plan file: no re-plan, no prompt."""
        plan_path = self._path(plan_path)
        if not plan_path.is_file():
            raise TerraformError(f"plan file {plan_path.name} does not exist", retryable=False)
        args = ["apply", "-input=false", "-no-color", f"-lock-timeout={self.lock_timeout}"]
        self._checked(command="apply", args=[*args, str(plan_path)])

    def show_state(self) -> dict[str, Any]:
        """The backend's current state as ``show -json`` prints it (after ``init``).

        Needs no configuration: the backend file alone, and the providers the state names.
        """
        return self._json(command="show", args=["show", "-json", "-no-color"])

    def output_json(self) -> dict[str, dict[str, Any]]:
        """Root outputs: name -> {"value", "sensitive", "type"}. Sensitive values included."""
        data = self._json(command="output", args=["output", "-json", "-no-color"])
        return {str(name): dict(item) for name, item in data.items()}

    def version(self) -> str:
        """The Terraform (or OpenTofu) version, e.g. "1.15.5": saved plans only work with it."""
        data = self._json(command="version", args=["version", "-json"])
        return str(data.get("terraform_version", ""))

    # -- plumbing --

    def _path(self, path: Path) -> Path:
        """Plan files: relative paths are relative to the work directory."""
        return (self.workdir / path).resolve()

    def _checked(self, *, command: str, args: list[str]) -> _Outcome:
        outcome = self._run(args)
        if outcome.returncode != 0:
            raise classify_failure(outcome.lines, command=command, returncode=outcome.returncode)
        return outcome

    def _json(self, *, command: str, args: list[str]) -> dict[str, Any]:
        outcome = self._run(args, capture_stdout=True)
        if outcome.returncode != 0:
            raise classify_failure(outcome.lines, command=command, returncode=outcome.returncode)
        try:
            data = json.loads(outcome.stdout)
        except ValueError:
            raise TerraformError(
                f"terraform {command} printed something that is not JSON",
                tail=outcome.lines[-TAIL_LINES:],
                command=command,
            ) from None
        if not isinstance(data, dict):
            raise TerraformError(f"terraform {command} printed unexpected JSON")
        return data

    def _environment(self) -> dict[str, str]:
        env = terraform_environment(self.environ)
        env.update(self.extra_env)
        if self.backend is not None:
            env.update(self.backend.environment())
        env.update(
            TF_IN_AUTOMATION="1",
            TF_INPUT="0",
            CHECKPOINT_DISABLE="1",  # no update check calls to HashiCorp
            TF_CLI_CONFIG_FILE=str(self.cli_config_file),
        )
        return env

    def _run(self, args: list[str], *, capture_stdout: bool = False) -> _Outcome:
        """One Terraform command on the shared runner; a cancel becomes TerraformCancelled.

        ``capture_stdout`` keeps stdout whole for JSON commands and streams only stderr.
        """
        command = args[0]
        if self.should_cancel():
            raise TerraformCancelled(f"terraform {command} was cancelled before it started")
        if not self.workdir.is_dir():
            raise TerraformError(f"work directory {self.workdir} does not exist", retryable=False)
        argv, payload = self.executable.command(args)
        try:
            result = run_process(
                argv=argv,
                cwd=self.workdir,
                env=self._environment(),
                on_line=self.on_line,
                should_cancel=self.should_cancel,
                on_start=self.on_start,
                on_idle=self.on_idle,
                stdin_data=payload,
                capture_stdout=capture_stdout,
                grace_s=self.grace_period,
                poll_s=self.poll_interval,
                redact=self.redact,
                tail_size=_KEEP_LINES,
                # Like Ctrl-C in a terminal: Terraform stops its provisioners itself
                # and saves what it did to the state.
                interrupt_group=False,
            )
        except OSError as exc:
            raise TerraformError(
                f"could not start {self.executable.describe()}: {exc.strerror or exc}",
                retryable=False,
                command=command,
            ) from None
        if result.cancelled:
            raise self._cancelled(command=command, result=result)
        stdout = result.stdout.decode("utf-8", "replace")
        return _Outcome(returncode=result.returncode, lines=list(result.tail), stdout=stdout)

    def _cancelled(self, *, command: str, result: ProcessResult) -> TerraformCancelled:
        how = (
            f"killed after {self.grace_period:g} s without stopping"
            if result.killed
            else f"stopped {result.stop_seconds or 0:.1f} s after the interrupt"
        )
        return TerraformCancelled(
            f"terraform {command} was cancelled ({how})",
            tail=tail_of(result.tail),
            command=command,
            returncode=result.returncode,
        )
