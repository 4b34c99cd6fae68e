"""What the plan and apply stages share: where state lives, laying out files, the client.

The backend is the portal's choice, never the blueprint's: Terraform's ``pg`` backend
in the portal's own PostgreSQL (one schema per account), so every worker on every
machine sees the same state.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from django.conf import settings
from django.db import connection

from accounts_app.names import ACCOUNT_NAME_RULE, is_account_name
from pipelines.clients.terraform import (
    Backend,
    PgBackend,
    PlanSummary,
    ResourceChange,
    TerraformClient,
    TerraformError,
)
from pipelines.redaction import Redactor
from pipelines.stages.base import StageCancelled, StageContext, StageError
from pipelines.stages.render import TERRAFORM_PREFIX

PLAN_PREFIX = "plan/"
PLAN_ARTIFACT = PLAN_PREFIX + "plan.bin"
# The provider lock file chosen at plan time: apply must init with the same providers,
# or Terraform refuses the saved plan.
LOCK_FILE = ".terraform.lock.hcl"
LOCK_ARTIFACT = PLAN_PREFIX + "terraform.lock.hcl"


# --- Where state lives ------------------------------------------------------------------


def state_schema(account_name: str) -> str:
    """One PostgreSQL schema per account: ``tfstate_<name>`` with ``-`` as ``_``.

    Two accounts must never share a state, so the key is derived only from a valid
    account name and anything else is refused (StageError). Valid names are
    ``[a-z][a-z0-9-]{2,39}`` in full (accounts_app.names): they hold no ``_``, so
    ``-`` -> ``_`` maps distinct names to distinct keys, and existing accounts keep
    the key their state already lives under. The result is at most 48 bytes of
    ``[a-z0-9_]``: a valid PostgreSQL identifier that needs no quoting.
    """
    return "tfstate_" + _checked_account_name(account_name).replace("-", "_")


def _checked_account_name(account_name: str) -> str:
    if not is_account_name(account_name):
        raise StageError(
            f"account name {account_name!r} is not a valid account name ({ACCOUNT_NAME_RULE}); "
            "its Terraform state has no safe place",
            retryable=False,
        )
    return account_name


def pg_conn_str(database: Mapping[str, Any]) -> str:
    """A lib/pq URL for Django's database settings. Holds the password: a secret."""
    user = quote(str(database.get("USER") or ""), safe="")
    password = str(database.get("PASSWORD") or "")
    auth = f"{user}:{quote(password, safe='')}@" if password else (f"{user}@" if user else "")
    host = str(database.get("HOST") or "127.0.0.1")
    port = str(database.get("PORT") or 5432)
    options = dict(database.get("OPTIONS") or {})
    params: dict[str, str] = {}
    if host.startswith("/"):
        # A Unix socket directory goes in the query string for lib/pq.
        params["host"] = host
        netloc = f"{auth}:{port}" if auth else f":{port}"
    else:
        netloc = f"{auth}{host}:{port}"
    # lib/pq defaults to sslmode=require; a local server usually has no TLS.
    params["sslmode"] = str(options.get("sslmode") or ("disable" if _is_local(host) else "require"))
    name = quote(str(database["NAME"]), safe="")
    return f"postgres://{netloc}/{name}?{urlencode(params)}"


def _is_local(host: str) -> bool:
    if host.startswith("/") or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def backend_for(account_name: str) -> PgBackend:
    return PgBackend(
        conn_str=pg_conn_str(settings.DATABASES["default"]),
        schema_name=state_schema(account_name),
    )


def describe_backend(backend: Backend) -> dict[str, str]:
    """Where state lives, fit for outputs and logs (no conn string)."""
    if isinstance(backend, PgBackend):
        return {"type": "pg", "schema": backend.schema_name}
    return {"type": "local", "path": str(backend.path)}


# --- Work directories -------------------------------------------------------------------


def lay_out_terraform(ctx: StageContext) -> Path:
    """Write the run's rendered files into this stage's own work dir.

    From the stored artifacts, not from another stage's folder: the previous stage may
    have run on another machine. The backend file is written by ``terraform_client``.
    """
    directory = ctx.workdir / "terraform"
    directory.mkdir(parents=True, exist_ok=True)
    files = ctx.artifacts.lay_out(prefix=TERRAFORM_PREFIX, directory=directory)
    if not files:
        raise StageError(
            "no rendered Terraform files are stored with this run: the render stage must run "
            "before this one",
            retryable=False,
        )
    ctx.log(f"laid out {len(files)} rendered files in {directory}")
    return directory


def terraform_cli_config() -> Path | None:
    """``PORTAL_TERRAFORM_CLI_CONFIG`` (a provider mirror, say), or None for an empty one."""
    configured = settings.PORTAL_TERRAFORM_CLI_CONFIG
    return Path(configured) if configured else None


def terraform_client(*, ctx: StageContext, directory: Path, backend: Backend) -> TerraformClient:
    """A client of the stage, ``init`` done with the portal's backend.

    It streams every line into the stage log and polls for cancel. Its redactor starts
    with the backend's conn string; every line then goes through the stage log, which
    redacts with every secret the run knows. A rendered ``backend``/``cloud`` block is
    refused at init (``TerraformClient.init`` writes our backend file and checks for one
    first).
    """
    try:
        client = TerraformClient(
            workdir=directory,
            terraform_bin=settings.TERRAFORM_BIN or None,
            cli_config_file=terraform_cli_config(),
            backend=backend,
            redactor=Redactor(),
            on_line=ctx.log,
            on_idle=ctx.flush_log,
            should_cancel=ctx.is_cancelled,
            on_start=ctx.on_process_start,
            grace_period=float(settings.PORTAL_TERRAFORM_GRACE_SECONDS),
            lock_timeout=str(settings.PORTAL_TERRAFORM_LOCK_TIMEOUT),
        )
    except TerraformError as exc:
        raise stage_error(exc) from exc
    where = describe_backend(backend)
    ctx.log(f"state: {where['type']} backend ({where.get('schema') or where.get('path')})")
    try:
        client.init()
    except TerraformError as exc:
        raise stage_error(exc, backend=backend) from exc
    return client


def log_plan(
    *, ctx: StageContext, summary: PlanSummary, head: str, tail: str = ""
) -> list[ResourceChange]:
    """Log "<head>: N to add, ... to destroy<tail>", then each changed resource (returned)."""
    changed = [r for r in summary.resources if r.action != "no-op"]
    ctx.log(
        f"{head}: {summary.add} to add, {summary.change} to change, "
        f"{summary.replace} to replace, {summary.destroy} to destroy{tail}"
    )
    for resource in changed:
        ctx.log(f"  {resource.action:<8} {resource.address}")
    return changed


def stage_error(exc: TerraformError, *, backend: Backend | None = None) -> StageError:
    """The stage's view of a Terraform failure: cancelled, stale plan, lock, or failed."""
    detail = "\n".join(exc.tail)
    if exc.kind == "cancelled":
        return StageCancelled(exc.explanation)
    if exc.kind == "stale_plan":
        return StageError(
            f"{exc.explanation}. Retry to plan again; the new plan goes through approval again",
            retryable=True,
            detail=detail,
            retry_from="plan",
        )
    if exc.kind == "state_lock":
        explanation = exc.explanation
        if exc.lock_id and exc.lock_id not in explanation:
            explanation = f"{explanation} (lock ID {exc.lock_id})"
        if isinstance(backend, PgBackend):
            # pg's lock is an advisory lock: Terraform cannot say who holds it, PostgreSQL can.
            explanation = f"{explanation}; {pg_lock_holder(backend.schema_name)}"
        return StageError(explanation, retryable=True, detail=detail)
    return StageError(exc.explanation, retryable=exc.retryable, detail=detail)


def state_resource_count(backend: Backend) -> int:
    """How many resources the account's Terraform state holds now (0: none, or no state).

    Read from the backend itself, with no ``init``: a teardown of an account whose
    providers cannot be installed (it failed at plan) still knows its state is empty.
    """
    if isinstance(backend, PgBackend):
        with connection.cursor() as cursor:
            cursor.execute("SELECT to_regclass(%s)", [f"{backend.schema_name}.states"])
            if cursor.fetchone() == (None,):
                return 0
            # The identifier is safe: state_schema() only makes [a-z0-9_] names.
            cursor.execute(
                f"SELECT data FROM {backend.schema_name}.states WHERE name = 'default'"  # noqa: S608
            )
            row = cursor.fetchone()
        text = row[0] if row else ""
    else:
        path = Path(backend.path)
        text = path.read_text() if path.is_file() else ""
    if not text:
        return 0
    resources = json.loads(text).get("resources") or []
    return sum(len(r.get("instances") or []) for r in resources if r.get("mode") == "managed")


def pg_lock_holder(schema: str) -> str:
    """Which PostgreSQL session holds the advisory lock on the account's state, in words."""
    try:
        with connection.cursor() as cursor:
            # The identifier is safe: state_schema() only makes [a-z0-9_] names.
            cursor.execute(f"SELECT id FROM {schema}.states WHERE name = 'default'")  # noqa: S608
            row = cursor.fetchone()
            if row is None:
                return "lock holder unknown (no state yet)"
            # A one-bigint advisory lock: classid holds the high 32 bits, objid the low ones.
            cursor.execute(
                """
                SELECT l.pid, a.application_name, a.client_addr, a.backend_start
                FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
                  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                  AND l.classid::bigint = (%s::bigint >> 32)
                  AND l.objid::bigint = (%s::bigint & 4294967295)
                """,
                [row[0], row[0]],
            )
            holders = cursor.fetchall()
    except Exception as exc:  # noqa: BLE001 - a lookup for a message must not hide the lock error
        return f"lock holder unknown ({type(exc).__name__})"
    if not holders:
        return "no session holds the lock any more: a retry should work"
    pid, application, address, since = holders[0]
    who = f"application {application!r}, " if application else ""
    where = f"from {address}, " if address else ""
    return f"held by PostgreSQL session pid {pid} ({who}{where}since {since:%Y-%m-%d %H:%M:%S %Z})"


# --- Secrets ----------------------------------------------------------------------------


def register_secret_value(*, ctx: StageContext, value: Any) -> None:
    """Redact a sensitive value from every later log line: its string and JSON forms."""
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, str):
        ctx.add_secret(value)
    else:
        ctx.add_secret(str(value))
        for leaf in _string_leaves(value):
            ctx.add_secret(leaf)
    ctx.add_secret(json.dumps(value))
    ctx.add_secret(json.dumps(value, sort_keys=True))
    ctx.add_secret(json.dumps(value, separators=(",", ":"), sort_keys=True))


def register_plan_secrets(*, ctx: StageContext, plan: Mapping[str, Any]) -> None:
    """Known sensitive values of a ``show -json`` plan stay out of every later log line."""
    for value in sensitive_values(plan):
        register_secret_value(ctx=ctx, value=value)


def register_account_secrets(ctx: StageContext) -> None:
    """The sensitive outputs the last apply recorded: redacted before Terraform says a word."""
    for output in ctx.account.outputs.values():
        if isinstance(output, dict) and output.get("sensitive"):
            register_secret_value(ctx=ctx, value=output.get("value"))


def _string_leaves(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _string_leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from _string_leaves(item)


def sensitive_values(plan: Mapping[str, Any]) -> list[Any]:
    """Values a ``show -json`` plan marks sensitive: outputs and resource attributes."""
    found: list[Any] = []
    for change in (plan.get("output_changes") or {}).values():
        change = change or {}
        for side in ("before", "after"):
            found.extend(_masked(value=change.get(side), mask=change.get(f"{side}_sensitive")))
    for item in plan.get("resource_changes") or []:
        change = item.get("change") or {}
        for side in ("before", "after"):
            found.extend(_masked(value=change.get(side), mask=change.get(f"{side}_sensitive")))
    for values_key in ("planned_values", "prior_state"):
        block = plan.get(values_key) or {}
        if values_key == "prior_state":
            block = block.get("values") or {}
        for output in (block.get("outputs") or {}).values():
            if (output or {}).get("sensitive"):
                found.append(output.get("value"))
    return [value for value in found if value is not None]


def _masked(*, value: Any, mask: Any) -> Iterator[Any]:
    """The parts of ``value`` where Terraform's parallel ``*_sensitive`` mask is true."""
    if mask is True:
        yield value
    elif isinstance(mask, dict) and isinstance(value, dict):
        for key, sub in mask.items():
            if key in value:
                yield from _masked(value=value[key], mask=sub)
    elif isinstance(mask, list) and isinstance(value, list):
        for sub_value, sub_mask in zip(value, mask, strict=False):
            yield from _masked(value=sub_value, mask=sub_mask)
