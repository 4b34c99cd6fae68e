"""A form generated from a blueprint's JSON Schema (the request form around it is in
``request_form``).

``SchemaForm`` turns a blueprint's ``parameters`` schema into fields (strings,
numbers, integers, booleans, enums as selects, nested objects as fieldsets,
arrays of objects as repeatable rows, arrays of scalars as one-per-line text)
and parses POST data back into a config dict. It works without JavaScript: an
array shows its rows plus one blank row, and an "add" submit button re-renders
the page with one more; blank rows are dropped.

Validation is server-side: values are parsed by type, then the whole config is
checked against the schema with jsonschema, and every problem is attached to the
field whose JSON path it names (``$.services[1].name``), so each error shows next
to its input and every value is kept.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django.http import QueryDict
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from accounts_app.field_words import limits_in_words, pattern_in_words, sentence
from pipelines.blueprints import apply_defaults

PREFIX = "c"
ADD_ROW = "add_row"  # the name of the "add another" submit buttons; the value is the array's name
MAX_ROWS = 100  # whatever the schema says, a form never grows beyond this
_PLAIN_KEY = re.compile(r"[a-zA-Z][a-zA-Z0-9_]*")


def child_path(parent: str, key: str | int) -> str:
    """The JSON path of a child, spelled exactly as jsonschema's ``error.json_path``."""
    if isinstance(key, int):
        return f"{parent}[{key}]"
    if _PLAIN_KEY.fullmatch(key):
        return f"{parent}.{key}"
    escaped = key.replace("\\", "\\\\").replace("'", r"\'")
    return f"{parent}['{escaped}']"


def _schema_type(schema: dict[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if not kind:
        if "enum" in schema:
            return "enum"
        if "properties" in schema:
            return "object"
        return "string"
    if "enum" in schema and kind != "array":
        return "enum"
    return str(kind)


def _rules_in_words(schema: dict[str, Any], *, kind: str) -> str:
    """A scalar's pattern and limits in words ("3 to 40 characters"), for its help text."""
    if kind not in ("string", "integer", "number"):
        return ""
    pattern = schema.get("pattern")
    words = pattern_in_words(pattern) if isinstance(pattern, str) else None
    return sentence("; ".join(part for part in (words, limits_in_words(schema, kind=kind)) if part))


def _humanize(key: str) -> str:
    return key.replace("_", " ").replace("-", " ").strip().capitalize() or key


# --- the nodes a template renders -----------------------------------------------------------


@dataclass(frozen=True)
class FieldLock:
    """A field pre-filled with production's value: read-only when the rule refuses others.

    Read-only is only how the form offers it; the server checks the value all the same.
    """

    note: str
    read_only: bool


@dataclass
class Node:
    name: str  # the HTML name (prefix), e.g. "c.services.0.name"
    key: str
    path: str  # the config's JSON path; "" for a blank row's fields (not in the config)
    label: str
    help: str
    required: bool
    errors: list[str] = field(default_factory=list)
    rules: str = ""  # the value's rules in words, shown before it is typed
    lock: FieldLock | None = None  # production's value, offered as it is (see FieldLock)
    lock_root: bool = False  # the node the lock names (its note is shown here only)

    @property
    def read_only(self) -> bool:
        return self.lock is not None and self.lock.read_only

    @property
    def html_id(self) -> str:
        return "id_" + self.name.replace(".", "-")

    @property
    def node_type(self) -> str:
        return "scalar"

    def walk(self) -> list[Node]:
        return [self]


@dataclass
class ScalarField(Node):
    widget: str = "text"  # text | number | checkbox | select | lines
    value: Any = ""  # what the input shows: a string, or a bool for a checkbox
    choices: list[tuple[str, str]] = field(default_factory=list)
    attrs: dict[str, str] = field(default_factory=dict)

    @property
    def checked(self) -> bool:
        return bool(self.value) if self.widget == "checkbox" else False


@dataclass
class ObjectGroup(Node):
    children: list[Node] = field(default_factory=list)

    @property
    def node_type(self) -> str:
        return "object"

    def walk(self) -> list[Node]:
        return [self, *(n for child in self.children for n in child.walk())]


@dataclass
class Row:
    number: int  # 1-based, for people
    path: str  # "" for a blank row
    children: list[Node]


@dataclass
class ArrayGroup(Node):
    rows: list[Row] = field(default_factory=list)
    can_add: bool = True
    item_label: str = "item"

    @property
    def node_type(self) -> str:
        return "array"

    @property
    def rows_name(self) -> str:
        return self.name + ".rows"

    def walk(self) -> list[Node]:
        return [self, *(n for row in self.rows for child in row.children for n in child.walk())]


MISSING = object()  # a blank input: the key is left out of the config


class _Builder:
    """Builds nodes from a schema and, when bound, parses the POSTed values on the way."""

    def __init__(self, data: QueryDict | None) -> None:
        self.data = data
        self.added_row = False

    @property
    def bound(self) -> bool:
        return self.data is not None

    def raw(self, name: str) -> str:
        assert self.data is not None
        value = self.data.get(name, "")
        return value if isinstance(value, str) else ""

    # Each build_* returns (node, parsed value or MISSING).

    def build(
        self,
        schema: dict[str, Any],
        *,
        name: str,
        key: str,
        path: str,
        required: bool,
        initial: Any,
        in_blank_row: bool = False,
    ) -> tuple[Node, Any]:
        kind = _schema_type(schema)
        common = {
            "name": name,
            "key": key,
            "path": path,
            "label": str(schema.get("title") or _humanize(key)),
            "help": str(schema.get("description") or ""),
            "required": required,
            "rules": _rules_in_words(schema, kind=kind),
        }
        if kind == "object":
            return self.build_object(schema, common, initial, in_blank_row)
        if kind == "array":
            raw_items = schema.get("items")
            items: dict[str, Any] = raw_items if isinstance(raw_items, dict) else {}
            if _schema_type(items) == "object":
                return self.build_array(schema, items, common, initial)
            return self.build_lines(schema, items, common, initial)
        return self.build_scalar(schema, kind, common, initial, in_blank_row)

    def build_object(
        self, schema: dict[str, Any], common: dict[str, Any], initial: Any, in_blank_row: bool
    ) -> tuple[Node, Any]:
        initial = initial if isinstance(initial, dict) else {}
        required = set(schema.get("required") or [])
        group = ObjectGroup(**common)
        value: dict[str, Any] = {}
        for key, sub in (schema.get("properties") or {}).items():
            if not isinstance(sub, dict):
                continue
            child, parsed = self.build(
                sub,
                name=f"{common['name']}.{key}",
                key=key,
                path=child_path(common["path"], key) if common["path"] else "",
                required=key in required,
                initial=initial.get(key, MISSING),
                in_blank_row=in_blank_row,
            )
            group.children.append(child)
            if parsed is not MISSING:
                value[key] = parsed
        return group, value

    def build_array(
        self,
        schema: dict[str, Any],
        items: dict[str, Any],
        common: dict[str, Any],
        initial: Any,
    ) -> tuple[Node, Any]:
        limit = min(int(schema.get("maxItems", MAX_ROWS)), MAX_ROWS)
        group = ArrayGroup(**common)
        group.item_label = str(items.get("title") or _humanize(common["key"]).rstrip("s").lower())
        if "maxItems" in schema or "minItems" in schema:
            counted = limits_in_words(schema, kind="array")
            group.rules = sentence(f"{counted} {_humanize(common['key']).lower()}")
        if self.bound:
            try:
                count = int(self.raw(group.rows_name))
            except ValueError:
                count = 1
            if self.raw(ADD_ROW) == group.name:
                count += 1
                self.added_row = True
            count = max(0, min(count, limit))
            initials: list[Any] = [MISSING] * count
        else:
            existing = initial if isinstance(initial, list) else []
            initials = list(existing[:limit])
            if len(initials) < limit:
                initials.append(MISSING)  # one blank row to fill in
        values: list[Any] = []
        for index, item_initial in enumerate(initials):
            row_name = f"{common['name']}.{index}"
            blank = self.bound and self._row_is_blank(items, row_name)
            if not self.bound:
                blank = item_initial is MISSING
            row_path = "" if blank else child_path(common["path"], len(values))
            if not self.bound and not blank:
                item_initial = apply_defaults(items, copy.deepcopy(item_initial))
            node, parsed = self.build_object(
                items,
                {
                    **common,
                    "name": row_name,
                    "key": str(index),
                    "path": row_path,
                    "required": False,
                },
                item_initial,
                in_blank_row=blank,
            )
            assert isinstance(node, ObjectGroup)
            group.rows.append(Row(number=index + 1, path=row_path, children=node.children))
            if not blank:
                values.append(parsed)
        group.can_add = len(group.rows) < limit
        if not self.bound:
            return group, MISSING
        # Every row left blank means "none": an empty list, not the schema's default.
        return group, values

    def _row_is_blank(self, items: dict[str, Any], row_name: str) -> bool:
        """A row whose text, number and select inputs are all empty (checkboxes do not count)."""
        assert self.data is not None
        prefix = row_name + "."
        for name in self.data:
            if name.startswith(prefix) and self.data.get(name, "").strip():
                leaf = self._leaf_schema(items, name[len(prefix) :])
                if leaf is not None and _schema_type(leaf) != "boolean":
                    return False
        return True

    @staticmethod
    def _leaf_schema(schema: dict[str, Any], dotted: str) -> dict[str, Any] | None:
        current: Any = schema
        for part in dotted.split("."):
            if not isinstance(current, dict):
                return None
            if _schema_type(current) == "array":
                current = current.get("items")
                continue
            current = (current.get("properties") or {}).get(part)
        return current if isinstance(current, dict) else None

    def build_lines(
        self, schema: dict[str, Any], items: dict[str, Any], common: dict[str, Any], initial: Any
    ) -> tuple[Node, Any]:
        """An array of scalars: a textarea, one item per line."""
        node = ScalarField(**common, widget="lines")
        item_kind = _schema_type(items)
        if not self.bound:
            values = initial if isinstance(initial, list) else schema.get("default", [])
            node.value = "\n".join(str(v) for v in values or [])
            return node, MISSING
        text = self.raw(node.name)
        node.value = text
        parsed = []
        for line in text.splitlines():
            if not line.strip():
                continue
            value, error = _parse_scalar(items, item_kind, line.strip())
            if error:
                node.errors.append(f"{line.strip()!r}: {error}")
            else:
                parsed.append(value)
        if not parsed and not common["required"]:
            return node, MISSING
        return node, parsed

    def build_scalar(
        self,
        schema: dict[str, Any],
        kind: str,
        common: dict[str, Any],
        initial: Any,
        in_blank_row: bool,
    ) -> tuple[Node, Any]:
        node = ScalarField(**common)
        if kind == "boolean":
            node.widget = "checkbox"
        elif kind == "enum":
            node.widget = "select"
            node.choices = [(str(option), str(option)) for option in schema.get("enum", [])]
            if not common["required"] or in_blank_row or self._in_row(node):
                node.choices.insert(0, ("", "—"))
        elif kind in ("integer", "number"):
            node.widget = "number"
            node.attrs = _number_attrs(schema, kind)
        else:
            node.attrs = {k: str(schema[s]) for k, s in _STRING_ATTRS if s in schema}

        if not self.bound:
            if initial is MISSING:
                initial = schema.get("default", MISSING) if not in_blank_row else MISSING
                if in_blank_row and kind == "boolean":
                    initial = schema.get("default", False)
            if node.widget == "checkbox":
                node.value = bool(initial) if initial is not MISSING else False
            else:
                node.value = "" if initial is MISSING or initial is None else _display(initial)
            return node, MISSING

        raw = self.raw(node.name)
        if node.widget == "checkbox":
            node.value = raw.lower() in ("on", "true", "1", "yes")
            return node, node.value
        node.value = raw
        text = raw.strip()
        if not text:
            if common["required"] and not in_blank_row:
                node.errors.append("This field is required.")
            return node, MISSING
        value, error = _parse_scalar(schema, kind, text)
        if error:
            node.errors.append(error)
            return node, MISSING
        return node, value

    @staticmethod
    def _in_row(node: Node) -> bool:
        return any(part.isdigit() for part in node.name.split("."))


_STRING_ATTRS = (("minlength", "minLength"), ("maxlength", "maxLength"))


def _display(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _number_attrs(schema: dict[str, Any], kind: str) -> dict[str, str]:
    attrs = {"step": "1" if kind == "integer" else "any"}
    if "minimum" in schema:
        attrs["min"] = str(schema["minimum"])
    if "maximum" in schema:
        attrs["max"] = str(schema["maximum"])
    return attrs


def _parse_scalar(schema: dict[str, Any], kind: str, text: str) -> tuple[Any, str]:
    """(value, "") or (None, error message) for one non-blank input."""
    if kind == "enum":
        for option in schema.get("enum", []):
            if _display(option) == text:
                return option, ""
        return None, "Select a valid choice."
    if kind == "integer":
        try:
            return int(text), ""
        except ValueError:
            return None, "Enter a whole number."
    if kind == "number":
        try:
            return (int(text) if re.fullmatch(r"-?\d+", text) else float(text)), ""
        except ValueError:
            return None, "Enter a number."
    if kind == "boolean":
        return text.lower() in ("on", "true", "1", "yes"), ""
    return text, ""


def friendly_message(error: ValidationError) -> str:
    """A schema error in words for people, next to the field it names."""
    v = error.validator_value
    match error.validator:
        case "pattern":
            # Words, never the regular expression itself: what it asks for, or the field's
            # own description of it.
            words = pattern_in_words(str(v))
            if words:
                return f"Not in the expected format: {words}."
            hint = error.schema.get("description") if isinstance(error.schema, dict) else ""
            if hint:
                return f"Not in the expected format. {hint}"
            return "Not in the expected format."
        case "minimum":
            return f"Must be at least {v}."
        case "maximum":
            return f"Must be at most {v}."
        case "exclusiveMinimum":
            return f"Must be more than {v}."
        case "exclusiveMaximum":
            return f"Must be less than {v}."
        case "minLength":
            return f"Must be at least {v} characters long."
        case "maxLength":
            return f"Must be at most {v} characters long."
        case "enum":
            return "Select a valid choice."
        case "minItems":
            return f"Give at least {v}."
        case "maxItems":
            return f"Give at most {v}."
        case "uniqueItems":
            return "Each item must be different."
        case "type":
            return f"Enter a valid {v}."
        case "multipleOf":
            return f"Must be a multiple of {v}."
    return str(error.message)


class SchemaForm:
    """A form for a JSON Schema object; bound to POST data when ``data`` is given."""

    def __init__(
        self,
        schema: dict[str, Any],
        data: QueryDict | None = None,
        initial: dict[str, Any] | None = None,
        exclude: tuple[str, ...] = (),
        locks: Mapping[str, FieldLock] | None = None,
    ) -> None:
        self.schema = schema
        self.exclude = exclude
        shown = copy.deepcopy(schema)
        properties = shown.get("properties") or {}
        for key in exclude:
            properties.pop(key, None)
        if shown.get("required"):
            shown["required"] = [k for k in shown["required"] if k not in exclude]
        builder = _Builder(data)
        start = apply_defaults(schema, copy.deepcopy(initial or {})) if data is None else initial
        root, value = builder.build_object(
            shown,
            {"name": PREFIX, "key": "", "path": "$", "label": "", "help": "", "required": True},
            start,
            in_blank_row=False,
        )
        assert isinstance(root, ObjectGroup)
        self.nodes: list[Node] = root.children
        self.config: dict[str, Any] = value if isinstance(value, dict) else {}
        self.is_bound = data is not None
        self.added_row = builder.added_row
        self.non_field_errors: list[str] = []
        # Errors about excluded keys (filled by the caller), for the caller to show.
        self.excluded_errors: dict[str, list[str]] = {}
        self._by_path = {node.path: node for node in root.walk() if node.path}
        self._checked = False
        for path, lock in (locks or {}).items():
            self._lock(path=path, lock=lock)

    def _lock(self, *, path: str, lock: FieldLock) -> None:
        """Mark the field at ``path`` and everything inside it as offered by production."""
        top = self._by_path.get(path)
        if top is None:
            return
        top.lock_root = True
        for node in top.walk():
            node.lock = lock
        if isinstance(top, ArrayGroup) and lock.read_only:
            top.can_add = False
            if not self.is_bound:  # no blank row to fill in: the rows are production's
                top.rows = [row for row in top.rows if row.path]

    def field_errors(self) -> list[Node]:
        return [node for node in self._by_path.values() if node.errors]

    @property
    def has_errors(self) -> bool:
        return bool(self.non_field_errors or self.excluded_errors or self.field_errors())

    def is_valid(self, extra: dict[str, Any] | None = None) -> bool:
        """Parse errors plus every schema problem; ``extra`` keys join the config first."""
        if not self.is_bound:
            return False
        if not self._checked:
            self._checked = True
            if extra:
                self.config.update(extra)
            already = {node.path for node in self.field_errors()}
            checked = apply_defaults(self.schema, copy.deepcopy(self.config))
            validator = Draft202012Validator(self.schema)
            for error in sorted(validator.iter_errors(checked), key=lambda e: e.json_path):
                for path, message in self._explain(error):
                    if not any(path == done or path.startswith(done + ".") for done in already):
                        self.add_error(path, message)
        return not self.has_errors

    def _explain(self, error: ValidationError) -> list[tuple[str, str]]:
        if error.validator == "required" and isinstance(error.instance, dict):
            names = error.validator_value if isinstance(error.validator_value, list) else []
            missing = [k for k in names if k not in error.instance]
            return [(child_path(error.json_path, k), "This field is required.") for k in missing]
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            return [(error.json_path, str(error.message))]
        return [(error.json_path, friendly_message(error))]

    def add_error(self, path: str, message: str) -> bool:
        """Attach an error to the field at ``path`` (or its nearest shown parent).

        Returns False when no field matches and the error went to the form's top
        (or, for an excluded key, to ``excluded_errors``).
        """
        for key in self.exclude:
            own = child_path("$", key)
            if path == own or path.startswith((own + ".", own + "[")):
                self.excluded_errors.setdefault(key, []).append(message)
                return False
        probe = path
        while probe:
            node = self._by_path.get(probe)
            if node is not None and probe != "$":
                if message not in node.errors:
                    node.errors.append(message)
                return True
            probe = _parent_path(probe)
        top = message if path in ("", "$") else f"{path}: {message}"
        if top not in self.non_field_errors:
            self.non_field_errors.append(top)
        return False

    def node_at(self, path: str) -> Node | None:
        return self._by_path.get(path)


def _parent_path(path: str) -> str:
    if path in ("$", ""):
        return ""
    match = re.match(r"^(.*)(\[\d+\]|\['(?:[^'\\]|\\.)*'\]|\.[a-zA-Z][a-zA-Z0-9_]*)$", path)
    return match.group(1) if match else ""
