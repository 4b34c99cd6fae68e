"""Terraform's failures as values: what went wrong, in one line, and whether a retry helps."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

from portal.errors import PortalError

TAIL_LINES = 20

ErrorKind = Literal["stale_plan", "state_lock", "failed", "cancelled"]


class TerraformError(PortalError):
    """A Terraform command failed. ``explanation`` is one line fit for users, never a secret.

    kind: ``stale_plan`` (the state changed since the plan was made: plan again),
    ``state_lock`` (another run holds the state lock), ``cancelled`` (we interrupted
    it), ``failed`` (anything else; ``retryable`` is False when the configuration
    itself is wrong).
    lock_id: the "Lock Info: ID" Terraform printed. With local (and S3) state that is
    the holder's lock, usable with ``force-unlock``; the ``pg`` backend records no lock
    info (its lock is a session advisory lock, freed when the holder's connection
    ends), so Terraform shows the ID of the lock it tried to take itself.
    ``tail`` holds the last lines of redacted output, for the stage log; ``detail``
    is the same as one text.
    """

    def __init__(
        self,
        explanation: str,
        *,
        kind: ErrorKind = "failed",
        retryable: bool = True,
        lock_id: str | None = None,
        tail: Sequence[str] = (),
        command: str = "",
        returncode: int | None = None,
    ) -> None:
        super().__init__(explanation, retryable=retryable)
        self.kind: ErrorKind = kind
        self.explanation = explanation
        self.lock_id = lock_id
        self.tail = list(tail)
        self.command = command
        self.returncode = returncode

    @property
    def detail(self) -> str:
        return "\n".join(self.tail)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kind={self.kind!r}, explanation={self.explanation!r})"


class TerraformCancelled(TerraformError):
    """We interrupted Terraform because ``should_cancel`` turned true."""

    def __init__(
        self,
        explanation: str = "Terraform was cancelled",
        *,
        tail: Sequence[str] = (),
        command: str = "",
        returncode: int | None = None,
    ) -> None:
        super().__init__(
            explanation,
            kind="cancelled",
            retryable=True,
            tail=tail,
            command=command,
            returncode=returncode,
        )


class BackendConflict(TerraformError):
    """A rendered file declares its own backend or cloud block: the portal refuses it."""

    def __init__(self, places: Sequence[str]) -> None:
        where = ", ".join(places)
        super().__init__(
            f"the blueprint declares its own Terraform backend ({where}); "
            "the portal chooses where state lives, remove that block",
            kind="failed",
            retryable=False,
        )
        self.places = list(places)


# Diagnostic summaries that mean the configuration (or plan file) itself is wrong:
# retrying the same input cannot help.
_CONFIG_ERRORS = (
    "Argument or block definition required",
    "Attribute redefined",
    "Call to unknown function",
    "Duplicate",
    "Error in function call",
    "Failed to read plan from plan file",
    "Incorrect attribute value type",
    "Invalid",
    "Missing item separator",
    "Missing newline after argument",
    "Missing required argument",
    "Module not installed",
    "No value for required variable",
    "Reference to undeclared",
    "Unclosed configuration block",
    "Unexpected",
    "Unsupported",
    "Unterminated template string",
    "Value for undeclared variable",
    "Variables not allowed",
)

# `init` could not fetch a provider: no retry of the same machine's set-up can help.
_PROVIDER_DOWNLOAD = re.compile(
    r"(?:Failed to query available provider packages|Failed to install provider)"
    r".*?provider (?P<provider>[\w.-]+/[\w.-]+(?:/[\w.-]+)?)"
)
_ERROR_LINE = re.compile(r"^[│|╷\s]*Error:\s*(?P<summary>.+?)\s*\Z")
_LOCATION_LINE = re.compile(r"^[│|\s]*on (?P<file>\S+) line (?P<line>\d+)")
_LOCK_ID_LINE = re.compile(r"^[│|\s]*ID:\s*(?P<id>\S+)\s*\Z")


def classify_failure(
    lines: Sequence[str], *, command: str, returncode: int | None = None
) -> TerraformError:
    """Turn a failed command's (already redacted) output into a ``TerraformError``."""
    # Whitespace-normalised: Terraform wraps its messages at 80 columns.
    text = " ".join(" ".join(lines).split())

    def error(
        explanation: str, *, kind: ErrorKind, retryable: bool, lock_id: str | None = None
    ) -> TerraformError:
        return TerraformError(
            explanation,
            kind=kind,
            retryable=retryable,
            lock_id=lock_id,
            tail=tail_of(lines),
            command=command,
            returncode=returncode,
        )

    if "Error acquiring the state lock" in text:
        lock_id = _lock_id(lines)
        which = f" (lock ID {lock_id})" if lock_id else ""
        return error(
            f"the Terraform state is locked by another operation{which}; "
            "try again when it has finished",
            kind="state_lock",
            retryable=True,
            lock_id=lock_id,
        )
    if "Saved plan is stale" in text or "Saved plan does not match the given state" in text:
        return error(
            "the saved plan is stale: the state changed after it was made; make a new plan",
            kind="stale_plan",
            retryable=True,
        )
    if "plan files cannot be transferred between different Terraform versions" in text:
        return error(
            "the saved plan was made by a different Terraform version; make a new plan",
            kind="failed",
            retryable=False,
        )

    provider = _PROVIDER_DOWNLOAD.search(text)
    if provider or "Failed to query available provider packages" in text:
        name = provider.group("provider") if provider else "a provider"
        return error(
            f"Terraform cannot download {name}: its registry cannot be reached from here; "
            "configure a provider mirror (provider_installation in the file TF_CLI_CONFIG_FILE "
            "names) or install the providers with the terraform binary (TERRAFORM_BIN)",
            kind="failed",
            retryable=False,
        )

    summary, location = _first_error(lines)
    if summary is None:
        code = f" with exit code {returncode}" if returncode is not None else ""
        return error(one_line(f"terraform {command} failed{code}"), kind="failed", retryable=True)
    where = f" ({location})" if location else ""
    config_error = summary.startswith(_CONFIG_ERRORS)
    return error(
        one_line(f"terraform {command} failed: {summary}{where}"),
        kind="failed",
        retryable=not config_error,
    )


def _lock_id(lines: Sequence[str]) -> str | None:
    """The ``ID:`` under ``Lock Info:`` in Terraform's "Error acquiring the state lock"."""
    in_lock_info = False
    for line in lines:
        if "Lock Info:" in line:
            in_lock_info = True
            continue
        if in_lock_info:
            match = _LOCK_ID_LINE.match(line)
            if match:
                return match.group("id")
    return None


def _first_error(lines: Sequence[str]) -> tuple[str | None, str | None]:
    for index, line in enumerate(lines):
        match = _ERROR_LINE.match(line)
        if not match:
            continue
        location = None
        for following in lines[index + 1 : index + 6]:
            where = _LOCATION_LINE.match(following)
            if where:
                location = f"{where.group('file')} line {where.group('line')}"
                break
        return match.group("summary"), location
    return None, None


def tail_of(lines: Sequence[str]) -> list[str]:
    trimmed = list(lines)
    while trimmed and not trimmed[-1].strip():
        trimmed.pop()
    return trimmed[-TAIL_LINES:]


def one_line(text: str, *, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
