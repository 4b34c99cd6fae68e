"""pipelines.rendering: literal emission, identifiers, errors, determinism, file handling."""

from __future__ import annotations

import datetime
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from markupsafe import Markup

from pipelines.rendering import (
    MANIFEST_NAME,
    HclIdent,
    LiteralError,
    RenderError,
    RenderResult,
    hcl_literal,
    hcl_string,
    ident,
    render_blueprint,
    write_render_result,
)

ACCOUNT = {"name": "acme-demo", "purpose": "demo", "id": ""}
BLUEPRINT = {"name": "test", "version": "1.0.0"}


def make_dir(root: Path, files: dict[str, str | bytes]) -> Path:
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


def render_one(tmp_path: Path, template: str, config: Any = None, **extra: Any) -> str:
    """Render a single main.tf.j2 and return main.tf as text."""
    root = make_dir(tmp_path / "tf", {"main.tf.j2": template})
    context = {"config": config if config is not None else {}, "account": ACCOUNT}
    context |= {"blueprint": BLUEPRINT, **extra}
    return render_blueprint(root, context).files["main.tf"].decode()


# --- literal emission --------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plain", '"plain"'),
        ("", '""'),
        ('say "hi"', '"say \\"hi\\""'),
        ("back\\slash", '"back\\\\slash"'),
        ("ends with \\", '"ends with \\\\"'),
        ("line1\nline2\r\n", '"line1\\nline2\\r\\n"'),
        ("tab\there", '"tab\\there"'),
        ("nul\x00bell\x07del\x7f", '"nul\\u0000bell\\u0007del\\u007f"'),
        ("${var.secret}", '"$${var.secret}"'),
        ("$${already}", '"$$${already}"'),
        ("%{ if true }x%{ endif }", '"%%{ if true }x%%{ endif }"'),
        ("cost: $5 and 50%", '"cost: $5 and 50%"'),
        ("close */ comment", '"close \\u002a/ comment"'),
        ("# and // stay", '"# and // stay"'),
        ("line\u2028sep\u2029para\x85nel", '"line\\u2028sep\\u2029para\\u0085nel"'),
        ("bidi\u202eevil\u2066", '"bidi\\u202eevil\\u2066"'),
        ("zero\u200bwidth\ufeff", '"zero\\u200bwidth\\ufeff"'),
        ("café ☕ 😀", '"café ☕ 😀"'),
        ("tag\U000e0041", '"tag\\U000e0041"'),
    ],
)
def test_strings_are_quoted_and_escaped(value: str, expected: str) -> None:
    assert hcl_literal(value) == expected
    assert hcl_string(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, "0"),
        (42, "42"),
        (-7, "-7"),
        (10**40, "1" + "0" * 40),
        (1.5, "1.5"),
        (-0.25, "-0.25"),
        (1e300, "1e+300"),
        (2.0, "2.0"),
        (True, "true"),
        (False, "false"),
        (None, "null"),
    ],
)
def test_scalars(value: Any, expected: str) -> None:
    assert hcl_literal(value) == expected


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_numbers_are_refused(value: float) -> None:
    with pytest.raises(LiteralError):
        hcl_literal(value)


def test_collections_are_emitted_recursively() -> None:
    assert hcl_literal([]) == "[]"
    assert hcl_literal({}) == "{}"
    assert hcl_literal(["a", 1, None, [True]]) == '["a", 1, null, [true]]'
    assert hcl_literal(("x", "y")) == '["x", "y"]'
    assert hcl_literal(iter(["g"])) == '["g"]'
    # Keys are sorted (determinism), quoted and escaped like any string.
    value = {"b": {"${k}": [1.5]}, "a\n": "v", 'q"': {}}
    assert hcl_literal(value) == '{ "a\\n" = "v", "b" = { "$${k}" = [1.5] }, "q\\"" = {} }'


@pytest.mark.parametrize(
    "value",
    [{1: "non-string key"}, {"a", "set"}, b"bytes", datetime.date(2026, 1, 1), object()],
)
def test_values_without_a_literal_are_refused(value: Any) -> None:
    with pytest.raises(LiteralError):
        hcl_literal(value)


def test_lone_surrogate_is_refused() -> None:
    with pytest.raises(LiteralError, match="surrogate"):
        hcl_literal("bad \ud800 text")


def test_markup_gets_no_exemption() -> None:
    # `|safe` returns Markup; it must still be quoted, never emitted raw.
    assert hcl_literal(Markup('"} resource "x" "y" {')) == '"\\"} resource \\"x\\" \\"y\\" {"'


# --- identifiers -------------------------------------------------------------


@pytest.mark.parametrize("name", ["web", "_x", "Orders_DB", "a-b-c", "a1"])
def test_ident_accepts_identifiers(name: str) -> None:
    assert ident(name) == HclIdent(name)
    assert hcl_literal(ident(name)) == name


@pytest.mark.parametrize(
    "name", ["", "1abc", "a b", "a.b", 'a"', "a\n", "-a", "a/b", "ä", "a${x}", 7, None]
)
def test_ident_refuses_anything_else(name: Any) -> None:
    with pytest.raises(LiteralError):
        ident(name)


def test_ident_filter_in_a_template(tmp_path: Path) -> None:
    template = (
        "{% for s in config.services %}\n"
        'resource "terraform_data" {{ s | ident }} {\n'
        "  input = {{ s }}\n"
        "}\n"
        "{% endfor %}\n"
    )
    text = render_one(tmp_path, template, {"services": ["web", "db_1"]})
    assert text == (
        'resource "terraform_data" web {\n  input = "web"\n}\n'
        'resource "terraform_data" db_1 {\n  input = "db_1"\n}\n'
    )


def test_bad_ident_fails_the_render_naming_file_and_line(tmp_path: Path) -> None:
    template = "# header\n\nresource x {{ config.name | ident }} {}\n"
    with pytest.raises(RenderError) as caught:
        render_one(tmp_path, template, {"name": 'x" {}\nresource "evil'})
    assert caught.value.template == "main.tf.j2"
    assert caught.value.lineno == 3
    assert str(caught.value).startswith("main.tf.j2:3: ")
    assert "not an identifier" in str(caught.value)


# --- templates ---------------------------------------------------------------


def test_template_emits_literals_in_place(tmp_path: Path) -> None:
    template = (
        "locals {\n"
        "  cidr  = {{ config.cidr }}\n"
        '  name  = {{ config.account_name ~ "-vpc" }}\n'
        "  count = {{ config.count }}\n"
        "  on    = {{ config.on }}\n"
        "  none  = {{ config.none }}\n"
        "  tags  = {{ config.tags }}\n"
        '  inj   = {{ "${" }}\n'
        "}\n"
    )
    config = {
        "cidr": "10.0.0.0/16",
        "account_name": "acme",
        "count": 3,
        "on": True,
        "none": None,
        "tags": {"team": "qa", "env": "demo"},
    }
    assert render_one(tmp_path, template, config) == (
        "locals {\n"
        '  cidr  = "10.0.0.0/16"\n'
        '  name  = "acme-vpc"\n'
        "  count = 3\n"
        "  on    = true\n"
        "  none  = null\n"
        '  tags  = { "env" = "demo", "team" = "qa" }\n'
        '  inj   = "$${"\n'
        "}\n"
    )


def test_for_and_if_work_and_trailing_newline_is_kept(tmp_path: Path) -> None:
    template = (
        "{% for s in config.services %}\n"
        "{% if s.database %}\n"
        "db {{ s.name }}\n"
        "{% endif %}\n"
        "{% endfor %}\n"
    )
    config = {"services": [{"name": "a", "database": True}, {"name": "b", "database": False}]}
    assert render_one(tmp_path, template, config) == 'db "a"\n'


def test_context_mappings_iterate_in_sorted_order(tmp_path: Path) -> None:
    template = "{% for k, v in config.tags.items() %}{{ k }}={{ v }};{% endfor %}\nend\n"
    first = render_one(tmp_path / "1", template, {"tags": {"b": 1, "a": 2}})
    second = render_one(tmp_path / "2", template, {"tags": {"a": 2, "b": 1}})
    assert first == second == '"a"=2;"b"=1;end\n'


def test_undefined_names_are_errors_with_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(RenderError) as caught:
        render_one(tmp_path, "a = 1\nb = {{ config.missing }}\n", {"present": 1})
    assert caught.value.lineno == 2
    assert "main.tf.j2:2" in str(caught.value)
    assert "missing" in str(caught.value)


def test_undefined_inside_a_collection_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RenderError, match="nope"):
        render_one(tmp_path, "x = {{ [config.nope] }}\n", {})


def test_syntax_errors_name_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(RenderError) as caught:
        render_one(tmp_path, "ok\nok\n{% for x in %}\n")
    assert (caught.value.template, caught.value.lineno) == ("main.tf.j2", 3)


def test_nan_from_a_template_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RenderError, match=r"main\.tf\.j2:1: .*nan"):
        render_one(tmp_path, '{{ "nan" | float }}\n')


def test_context_must_be_json_like(tmp_path: Path) -> None:
    with pytest.raises(RenderError, match=r"config\.when"):
        render_one(tmp_path, "x\n", {"when": datetime.date(2026, 1, 1)})
    with pytest.raises(RenderError, match=r"nan"):
        render_one(tmp_path, "x\n", {"n": float("nan")})


def test_context_needs_config_account_and_blueprint(tmp_path: Path) -> None:
    root = make_dir(tmp_path / "tf", {"main.tf.j2": "x\n"})
    with pytest.raises(RenderError, match="blueprint"):
        render_blueprint(root, {"config": {}, "account": ACCOUNT})


def test_templates_cannot_mutate_the_context(tmp_path: Path) -> None:
    with pytest.raises(RenderError, match="SecurityError"):
        render_one(tmp_path, "{{ config.names.append(1) }}\n", {"names": []})


# --- files -------------------------------------------------------------------


def test_j2_files_render_and_other_files_are_copied_verbatim(tmp_path: Path) -> None:
    binary = bytes(range(256))
    root = make_dir(
        tmp_path / "tf",
        {
            "main.tf.j2": "name = {{ config.name }}\n",
            "plain.tf": "# {{ not rendered }}\nx = 1\n",
            "files/blob.bin": binary,
            "modules/net/vars.tf.j2": "cidr = {{ config.cidr }}\n",
            "modules/net/README.md": "docs\n",
        },
    )
    result = render_blueprint(
        root,
        {"config": {"name": "n", "cidr": "10.0.0.0/8"}, "account": ACCOUNT, "blueprint": BLUEPRINT},
    )
    assert list(result.files) == [
        "files/blob.bin",
        "main.tf",
        "modules/net/README.md",
        "modules/net/vars.tf",
        "plain.tf",
    ]
    assert result.files["main.tf"] == b'name = "n"\n'
    assert result.files["plain.tf"] == b"# {{ not rendered }}\nx = 1\n"
    assert result.files["files/blob.bin"] == binary
    assert result.files["modules/net/vars.tf"] == b'cidr = "10.0.0.0/8"\n'
    assert [path for path, _ in result.manifest] == list(result.files)
    for path, digest in result.manifest:
        assert digest == hashlib.sha256(result.files[path]).hexdigest()


def test_rendering_is_deterministic(tmp_path: Path) -> None:
    root = make_dir(
        tmp_path / "tf",
        {
            "b.tf.j2": "x = {{ config }}\n",
            "a/c.tf.j2": "{% for k in config.m %}{{ k }}{% endfor %}\n",
            "z.tf": "z\n",
        },
    )
    config_one = {"m": {"y": 1, "x": [1, 2]}, "s": "é\n${x}"}
    config_two = {"s": "é\n${x}", "m": {"x": [1, 2], "y": 1}}
    context = {"account": ACCOUNT, "blueprint": BLUEPRINT}
    first = render_blueprint(root, {"config": config_one, **context}, tmp_path / "out1")
    second = render_blueprint(root, {"config": config_two, **context}, tmp_path / "out2")
    assert first.files == second.files
    assert first.manifest == second.manifest
    assert first.digest == second.digest
    for path in first.files:
        assert (tmp_path / "out1" / path).read_bytes() == (tmp_path / "out2" / path).read_bytes()
    assert (tmp_path / "out1" / MANIFEST_NAME).read_bytes() == (
        tmp_path / "out2" / MANIFEST_NAME
    ).read_bytes()
    # A different value gives a different manifest.
    third = render_blueprint(root, {"config": {**config_one, "s": "other"}, **context})
    assert third.digest != first.digest


def test_out_dir_gets_files_and_manifest(tmp_path: Path) -> None:
    root = make_dir(tmp_path / "tf", {"main.tf.j2": "x = {{ config.x }}\n", "sub/y.tf": "y\n"})
    out = tmp_path / "out" / "deep"
    context = {"config": {"x": 1}, "account": ACCOUNT, "blueprint": BLUEPRINT}
    result = render_blueprint(root, context, out)
    assert (out / "main.tf").read_text() == "x = 1\n"
    assert (out / "sub" / "y.tf").read_text() == "y\n"
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest == [{"path": p, "sha256": d} for p, d in result.manifest]
    assert (out / MANIFEST_NAME).read_bytes() == result.manifest_json()


def test_write_render_result_replaces_an_earlier_render(tmp_path: Path) -> None:
    out = tmp_path / "work"
    write_render_result(RenderResult.from_files({"a.tf": b"a\n", "old.tf": b"old\n"}), out)
    (out / "backend.tf").write_text("# written by the portal\n")
    (out / ".terraform").mkdir()

    new = RenderResult.from_files({"a.tf": b"a2\n", "b/c.tf": b"c\n"})
    written = write_render_result(new, out)
    assert sorted(p.relative_to(out.resolve()).as_posix() for p in written) == ["a.tf", "b/c.tf"]
    assert (out / "a.tf").read_bytes() == b"a2\n"
    assert not (out / "old.tf").exists()  # listed by the earlier manifest only
    assert (out / "backend.tf").exists()  # never ours: left alone
    assert (out / ".terraform").is_dir()
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    # Laying the same result out again changes nothing.
    write_render_result(new, out)
    assert (out / "b" / "c.tf").read_bytes() == b"c\n"


@pytest.mark.parametrize("path", ["../evil.tf", "/etc/x", "a/../../b", "a\\b", "", "./a", "a//b"])
def test_paths_leaving_the_dir_are_refused(tmp_path: Path, path: str) -> None:
    with pytest.raises(RenderError):
        write_render_result(RenderResult(files={path: b"x"}, manifest=((path, "0"),)), tmp_path)
    with pytest.raises(RenderError):
        RenderResult.from_files({path: b"x"})


def test_two_sources_for_one_file_are_refused(tmp_path: Path) -> None:
    root = make_dir(tmp_path / "tf", {"a.tf": "x\n", "a.tf.j2": "y\n"})
    with pytest.raises(RenderError, match=r"both produce a\.tf"):
        render_blueprint(root, {"config": {}, "account": ACCOUNT, "blueprint": BLUEPRINT})


def test_manifest_name_is_reserved(tmp_path: Path) -> None:
    root = make_dir(tmp_path / "tf", {"manifest.json": "[]\n"})
    with pytest.raises(RenderError, match="reserved"):
        render_blueprint(root, {"config": {}, "account": ACCOUNT, "blueprint": BLUEPRINT})


def test_symlinks_are_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret\n")
    root = make_dir(tmp_path / "tf", {"main.tf": "x\n"})
    (root / "leak.tf").symlink_to(secret)
    with pytest.raises(RenderError, match="symbolic link"):
        render_blueprint(root, {"config": {}, "account": ACCOUNT, "blueprint": BLUEPRINT})


@pytest.mark.parametrize(
    "include", ["../secret.txt", "/etc/passwd", "sub/../../secret.txt", "secret.txt"]
)
def test_includes_cannot_leave_the_terraform_dir(tmp_path: Path, include: str) -> None:
    (tmp_path / "secret.txt").write_text("top secret\n")
    root = make_dir(tmp_path / "tf", {"main.tf.j2": f'{{% include "{include}" %}}\n'})
    with pytest.raises(RenderError, match="TemplateNotFound"):
        render_blueprint(root, {"config": {}, "account": ACCOUNT, "blueprint": BLUEPRINT})


def test_includes_inside_the_terraform_dir_work(tmp_path: Path) -> None:
    root = make_dir(
        tmp_path / "tf",
        {
            "main.tf.j2": '{% from "macros/m.j2" import tag %}t = {{ tag(config.x) }}\n',
            "macros/m.j2": "{% macro tag(v) %}{{ v }}{% endmacro %}",
        },
    )
    result = render_blueprint(
        root, {"config": {"x": 'a"b'}, "account": ACCOUNT, "blueprint": BLUEPRINT}
    )
    # Macro output is template text: the caller's {{ }} quotes it a second time,
    # so the value still lands inside one literal.
    assert result.files["main.tf"] == b't = "\\"a\\\\\\"b\\""\n'


def test_missing_terraform_dir(tmp_path: Path) -> None:
    with pytest.raises(RenderError, match="does not exist"):
        render_blueprint(
            tmp_path / "nope", {"config": {}, "account": ACCOUNT, "blueprint": BLUEPRINT}
        )


def test_errors_in_included_templates_name_that_file(tmp_path: Path) -> None:
    root = make_dir(
        tmp_path / "tf",
        {
            "main.tf.j2": 'a = 1\n{% include "parts/p.j2" %}\n',
            "parts/p.j2": "ok = 1\nbad = {{ config.nope }}\n",
        },
    )
    with pytest.raises(RenderError) as caught:
        render_blueprint(root, {"config": {}, "account": ACCOUNT, "blueprint": BLUEPRINT})
    assert (caught.value.template, caught.value.lineno) == ("parts/p.j2", 2)


def test_ident_joined_to_a_string_is_a_quoted_string(tmp_path: Path) -> None:
    text = render_one(tmp_path, '{{ (config.n | ident) ~ "-a" }}\n', {"n": "web"})
    assert text == '"web-a"\n'


@pytest.mark.parametrize(
    "working_file", [".terraform/providers/x", "terraform.tfstate", "a/terraform.tfstate.backup"]
)
def test_terraform_working_files_are_refused(tmp_path: Path, working_file: str) -> None:
    root = make_dir(tmp_path / "tf", {"main.tf": "x\n", working_file: "{}"})
    with pytest.raises(RenderError, match="working file"):
        render_blueprint(root, {"config": {}, "account": ACCOUNT, "blueprint": BLUEPRINT})


def test_a_damaged_old_manifest_does_not_block_a_new_layout(tmp_path: Path) -> None:
    (tmp_path / MANIFEST_NAME).write_text('[{"path": "../../etc/passwd"}, {"path": 3}, "x"]')
    write_render_result(RenderResult.from_files({"a.tf": b"a\n"}), tmp_path)
    assert (tmp_path / "a.tf").read_bytes() == b"a\n"
    assert json.loads((tmp_path / MANIFEST_NAME).read_text())[0]["path"] == "a.tf"


# --- compiled templates are reused only for the very same text ---------------


def test_a_changed_template_renders_its_new_text(tmp_path: Path) -> None:
    context = {"config": {"x": "v"}, "account": ACCOUNT, "blueprint": BLUEPRINT}
    root = make_dir(tmp_path / "tf", {"main.tf.j2": "a = {{ config.x }}\n"})
    assert render_blueprint(root, context).files["main.tf"] == b'a = "v"\n'
    (root / "main.tf.j2").write_text("b = {{ config.x }}\n")
    assert render_blueprint(root, context).files["main.tf"] == b'b = "v"\n'


def test_blueprints_with_the_same_file_names_each_render_their_own(tmp_path: Path) -> None:
    context = {"config": {"x": "v"}, "account": ACCOUNT, "blueprint": BLUEPRINT}
    one = make_dir(tmp_path / "one", {"main.tf.j2": "one = {{ config.x }}\n"})
    two = make_dir(tmp_path / "two", {"main.tf.j2": "two = {{ config.x }}\n"})
    for _ in range(2):
        assert render_blueprint(one, context).files["main.tf"] == b'one = "v"\n'
        assert render_blueprint(two, context).files["main.tf"] == b'two = "v"\n'
