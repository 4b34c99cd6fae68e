"""Stages `pre_hooks` and `post_hooks`: built-in hooks first, then the folder's scripts.

A script gets a minimal environment, the config in ``CONFIG_JSON`` and the account's
Terraform outputs in ``TF_OUTPUTS_JSON`` (sensitive ones only when the blueprint sets
``hooks.sensitive_outputs: true``). What it writes to ``HOOK_OUTPUTS`` becomes the
stage's outputs, shown by the pages and the API: it is redacted first, with every
secret the run knows, so a hook cannot publish a secret by copying it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipelines.clients.process import run_process
from pipelines.stages.base import StageCancelled, StageContext, StageError, log_with_outcome
from pipelines.stages.builtin_hooks import run_builtin_hook

MINIMAL_PATH = "/usr/local/bin:/usr/bin:/bin"


def execute(ctx: StageContext) -> dict[str, Any]:
    # A hook's output is written a burst at a time (the runner's on_idle); the last lines
    # with the outcome.
    log_with_outcome(ctx)
    phase = "pre" if ctx.stage_kind == "pre_hooks" else "post"
    hooks = ctx.blueprint.hooks
    builtins = hooks.pre if phase == "pre" else hooks.post
    scripts = hooks.pre_scripts if phase == "pre" else hooks.post_scripts
    outputs: dict[str, Any] = {}
    ran: list[str] = []
    for name in builtins:
        ctx.log(f"built-in hook {name}")
        outputs.update(run_builtin_hook(name=name, ctx=ctx))
        ran.append(name)
    for script in scripts:
        outputs.update(_run_script(ctx=ctx, script=script, timeout_minutes=hooks.timeout_minutes))
        ran.append(script.name)
    if not ran:
        ctx.log(f"no {phase}-deploy hooks in blueprint {ctx.blueprint.name}")
    return {**outputs, "hooks_ran": ran}


def _run_script(*, ctx: StageContext, script: Path, timeout_minutes: float) -> dict[str, Any]:
    hook_dir = ctx.workdir / f"hook-{script.name}"
    hook_dir.mkdir(parents=True, exist_ok=True)
    config_file = hook_dir / "config.json"
    config_file.write_text(json.dumps(ctx.config, sort_keys=True))
    tf_outputs_file = hook_dir / "tf_outputs.json"
    tf_outputs_file.write_text(json.dumps(_output_values(ctx), sort_keys=True))
    hook_outputs_file = hook_dir / "outputs.json"
    hook_outputs_file.unlink(missing_ok=True)
    env = {
        "PATH": MINIMAL_PATH,
        "HOME": str(hook_dir),
        "LANG": "C.UTF-8",
        "ACCOUNT_NAME": ctx.account.name,
        "ACCOUNT_ID": ctx.account.cloud_account_id,
        "ACCOUNT_PURPOSE": ctx.account.purpose,
        "RUN_ID": str(ctx.run_id),
        "STAGE_ATTEMPT": str(ctx.attempt),
        "CONFIG_JSON": str(config_file),
        "TF_OUTPUTS_JSON": str(tf_outputs_file),
        "HOOK_OUTPUTS": str(hook_outputs_file),
    }
    ctx.log(f"hook {script.name} (timeout {timeout_minutes:g} min)")
    try:
        result = run_process(
            argv=[str(script)],
            cwd=hook_dir,
            env=env,
            timeout_s=timeout_minutes * 60,
            on_line=lambda line: ctx.log(f"[{script.name}] {line}"),
            on_idle=ctx.flush_log,
            should_cancel=ctx.is_cancelled,
            on_start=ctx.on_process_start,
            redact=ctx.redact,
        )
    except OSError as exc:
        raise StageError(
            f"hook {script.name} could not be started: {exc.strerror or exc}", retryable=False
        ) from None
    tail = "\n".join(result.tail[-10:])
    if result.cancelled:
        raise StageCancelled()
    if result.timed_out:
        raise StageError(
            f"hook {script.name} timed out after {timeout_minutes:g} minutes", detail=tail
        )
    if result.returncode != 0:
        last = result.tail[-1] if result.tail else "no output"
        raise StageError(
            f"hook {script.name} exited with status {result.returncode}: {last}",
            detail=f"last lines of {script.name}:\n{tail}",
        )
    outputs = _read_hook_outputs(name=script.name, path=hook_outputs_file)
    return {ctx.redact(key): _redacted(ctx=ctx, value=value) for key, value in outputs.items()}


def _output_values(ctx: StageContext) -> dict[str, Any]:
    """The account's Terraform outputs as name -> value (as recorded by the last apply);
    sensitive ones only when the blueprint lets its hooks see them."""
    shown = ctx.blueprint.hooks.sensitive_outputs
    return {
        name: out.get("value")
        for name, out in ctx.account.outputs.items()
        if shown or not out.get("sensitive")
    }


def _redacted(*, ctx: StageContext, value: Any) -> Any:
    """``value`` (parsed JSON) with every secret the run knows replaced, at any depth."""
    if isinstance(value, str):
        return ctx.redact(value)
    if isinstance(value, dict):
        return {ctx.redact(str(key)): _redacted(ctx=ctx, value=item) for key, item in value.items()}
    if isinstance(value, list):
        return [_redacted(ctx=ctx, value=item) for item in value]
    if isinstance(value, bool) or value is None:
        return value
    # A number that is a secret (a PIN, a numeric token) is replaced by the marker.
    text = str(value)
    return value if ctx.redact(text) == text else ctx.redact(text)


def _read_hook_outputs(*, name: str, path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text() or "{}")
    except json.JSONDecodeError as exc:
        raise StageError(f"hook {name} wrote HOOK_OUTPUTS that is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise StageError(f"hook {name} wrote HOOK_OUTPUTS that is not a JSON object")
    return data
