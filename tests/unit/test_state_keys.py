"""Two accounts never share a Terraform state: the state key of a name is its own."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from accounts_app.names import is_account_name
from pipelines.stages.base import StageError
from pipelines.stages.terraform_support import state_schema

# What PostgreSQL takes unquoted, within its 63-byte identifier limit.
PG_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")

# Names near the rule: valid ones, and ones a character away (newline, "_", upper case...).
near_names = st.from_regex(r"\A[a-zA-Z_][a-z0-9_\-.\n]{1,41}\n?\Z") | st.text(max_size=45)
many_examples = hypothesis_settings(
    max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None
)


def key_or_none(name: str) -> str | None:
    try:
        return state_schema(name)
    except StageError:
        return None


@pytest.mark.parametrize("name", ["cli-nl\n", "cli-nl_", "CLI-NL", "a-b\n", "ab", "a" * 41, ""])
def test_a_name_that_is_not_an_account_name_has_no_state(name: str) -> None:
    with pytest.raises(StageError, match="is not a valid account name") as refused:
        state_schema(name)
    assert refused.value.retryable is False


def test_the_newline_probe_and_its_neighbour_never_share_a_state() -> None:
    # The issue: "cli-nl\n" became tfstate_cli_nl_, the schema of a later "cli-nl-".
    assert key_or_none("cli-nl\n") is None
    assert state_schema("cli-nl-") == "tfstate_cli_nl_"


def test_valid_names_keep_the_key_their_state_already_lives_under() -> None:
    assert state_schema("qa-team-7") == "tfstate_qa_team_7"


@many_examples
@given(first=near_names, second=near_names)
def test_two_names_are_refused_or_get_distinct_keys(first: str, second: str) -> None:
    keys = key_or_none(first), key_or_none(second)
    for name, key in zip((first, second), keys, strict=True):
        assert (key is None) == (not is_account_name(name))
        if key is not None:
            assert PG_IDENTIFIER.fullmatch(key) and len(key.encode()) <= 63
    if None not in keys and first != second:
        assert keys[0] != keys[1]


@many_examples
@given(name=st.from_regex(r"\A[a-z][a-z0-9-]{2,39}\Z"))
def test_every_valid_name_has_a_key(name: str) -> None:
    assert state_schema(name) == "tfstate_" + name.replace("-", "_")
