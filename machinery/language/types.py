"""The type model: type specs (names and structures), JSON Schema conversion, structural subtyping,
and checking JSON values against fields, each problem named by its path."""

from __future__ import annotations

import json
import re
from typing import Any, Callable, Iterable, Mapping
from urllib.parse import unquote

# Canonical names first; aliases map onto them.
CANONICAL = ("string", "int", "float", "bool", "object", "array", "any")
ALIASES = {
    "string": "string", "str": "string",
    "int": "int", "integer": "int",
    "float": "float", "number": "float",
    "bool": "bool", "boolean": "bool",
    "object": "object", "dict": "object",
    "array": "array", "list": "array",
    "any": "any",
}
TYPE_NAMES = tuple(sorted(ALIASES))

# Bounds of one field's type: how deep it nests, how many fields one object has, how many types
# the whole tree holds, how many values an enum lists. A check reports at most MAX_PROBLEMS problems.
MAX_DEPTH = 16
MAX_FIELDS = 200
MAX_NODES = 2000
MAX_ENUM = 500
MAX_PROBLEMS = 20
MAX_NAME = 100
# A JSON Schema's anyOf, allOf and $ref chains may nest this far; a conversion lists this many warnings.
MAX_LEVELS = 64
MAX_WARNINGS = 50

TYPE_KEYS = frozenset({"type", "items", "fields", "nullable", "enum", "description"})
FIELD_KEYS = frozenset({"name", "type", "schema", "required", "nullable", "enum", "description"})
_PLAIN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")
_BAD_NAME = re.compile(r"[\x00-\x1f\x7f]")


class TypeSpecError(ValueError):
    """A type spec that does not parse; `path` says where inside the field (``type.fields[1].type``)."""

    def __init__(self, path: str, problem: str):
        self.path, self.problem = path, problem
        super().__init__(f"{path}: {problem}" if path else problem)


def canonical(type_name: str) -> str:
    """Return the canonical name of a type; raise ValueError for an unknown one."""
    try:
        return ALIASES[type_name.lower()] if isinstance(type_name, str) else ALIASES[type_name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown type {type_name!r}; known types: {', '.join(TYPE_NAMES)}"
        ) from None


def json_type(value: Any) -> str:
    """Name the type of a JSON value in our words, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return type(value).__name__


# -- parsing ------------------------------------------------------------------------------
#
# A parsed ("normal") type is a dict with every key present:
#     {"type": <canonical name>, "nullable": bool, "enum": [values] | None,
#      "items": <normal type> | None, "fields": [<normal field>] | None}
# and a normal field is {"name", "type": <normal type>, "required": bool} (plus "description").
# `items` None is an array of anything, `fields` None an object of anything. A normal type is
# itself a valid spec, so parsing is idempotent.


def _named(kind: str) -> dict:
    return {"type": kind, "nullable": False, "enum": None, "items": None, "fields": None}


_NAMED = {alias: _named(kind) for alias, kind in ALIASES.items()}


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


class _Parser:
    def __init__(self) -> None:
        self.nodes = 0
        self.warnings: list[str] = []
        self.converted: Any = None

    def type_(self, spec: Any, path: str, depth: int) -> dict:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise TypeSpecError(path, f"more than {MAX_NODES} types in one field")
        if depth > MAX_DEPTH:
            raise TypeSpecError(path, f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(spec, str):
            try:
                return dict(_NAMED[spec] if spec in _NAMED else _named(canonical(spec)))
            except ValueError as error:
                raise TypeSpecError(path, str(error)) from None
        if not isinstance(spec, dict):
            raise TypeSpecError(path, "must be a type name or an object such as "
                                      f'{{"type": "array", "items": "string"}}, got {json_type(spec)}')
        unknown = sorted(str(key) for key in set(spec) - TYPE_KEYS)
        if unknown:
            raise TypeSpecError(path, f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                                      f"a type may hold {', '.join(sorted(TYPE_KEYS))}")
        if "type" not in spec:
            raise TypeSpecError(path, "missing 'type' (a type name such as \"array\" or \"object\")")
        if not isinstance(spec["type"], str):
            raise TypeSpecError(_join(path, "type"), "must be a type name, got " + json_type(spec["type"]))
        try:
            node = _named(canonical(spec["type"]))
        except ValueError as error:
            raise TypeSpecError(_join(path, "type"), str(error)) from None
        if spec.get("items") is not None:
            if node["type"] != "array":
                raise TypeSpecError(_join(path, "items"), f"only an array has items, not {node['type']}")
            node["items"] = self.type_(spec["items"], _join(path, "items"), depth + 1)
        if spec.get("fields") is not None:
            if node["type"] != "object":
                raise TypeSpecError(_join(path, "fields"), f"only an object has fields, not {node['type']}")
            node["fields"] = self.fields(spec["fields"], _join(path, "fields"), depth + 1)
        self.modifiers(node, spec, path)
        return node

    def modifiers(self, node: dict, spec: Mapping[str, Any], path: str) -> None:
        nullable = spec.get("nullable")
        if nullable is not None:
            if not isinstance(nullable, bool):
                raise TypeSpecError(_join(path, "nullable"), f"must be true or false, got {json_type(nullable)}")
            node["nullable"] = node["nullable"] or nullable
        enum = spec.get("enum")
        if enum is None:
            return
        where = _join(path, "enum")
        if node["enum"] is not None:
            raise TypeSpecError(where, "given both on the field and in its type")
        if not isinstance(enum, list) or not enum:
            raise TypeSpecError(where, "must be a non-empty list of values")
        if len(enum) > MAX_ENUM:
            raise TypeSpecError(where, f"more than {MAX_ENUM} values")
        checker = _compile({**node, "nullable": False})
        seen = set()
        for index, value in enumerate(enum):
            if value is None:
                raise TypeSpecError(f"{where}[{index}]", "null is not a value of an enum; "
                                                         "say \"nullable\": true instead")
            if isinstance(value, (dict, list)):
                raise TypeSpecError(f"{where}[{index}]", "an enum lists strings, numbers or booleans")
            problems: dict = {}
            checker(value, "", problems)
            if problems:
                raise TypeSpecError(f"{where}[{index}]", f"{_show(value)} is not {_a(node['type'])}")
            key = _enum_key(value)
            if key in seen:
                raise TypeSpecError(f"{where}[{index}]", f"{_show(value)} is listed twice")
            seen.add(key)
        node["enum"] = list(enum)

    def fields(self, spec: Any, path: str, depth: int) -> list[dict]:
        if not isinstance(spec, list):
            raise TypeSpecError(path, f"must be a list of fields, got {json_type(spec)}")
        if len(spec) > MAX_FIELDS:
            raise TypeSpecError(path, f"more than {MAX_FIELDS} fields in one object")
        parsed, names = [], set()
        for index, field in enumerate(spec):
            where = f"{path}[{index}]"
            normal = self.field(field, where, depth, strict=True)
            if normal["name"] in names:
                raise TypeSpecError(_join(where, "name"), f"{normal['name']!r} is declared twice")
            names.add(normal["name"])
            parsed.append(normal)
        return parsed

    def field(self, field: Any, path: str, depth: int, strict: bool, convert: bool = True) -> dict:
        if not isinstance(field, dict):
            raise TypeSpecError(path, f"must be an object with a name and a type, got {json_type(field)}")
        if strict:
            unknown = sorted(str(key) for key in set(field) - FIELD_KEYS)
            if unknown:
                raise TypeSpecError(path, f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                                          f"a field may hold {', '.join(sorted(FIELD_KEYS))}")
        name = field.get("name")
        # A top-level field's name is the definition schema's to check (it becomes a context key).
        if not isinstance(name, str) or strict and (not 0 < len(name) <= MAX_NAME or _BAD_NAME.search(name)):
            raise TypeSpecError(_join(path, "name"), f"must be a string of 1 to {MAX_NAME} characters "
                                                     "without control characters")
        required = field.get("required", True)
        if not isinstance(required, bool):
            raise TypeSpecError(_join(path, "required"), f"must be true or false, got {json_type(required)}")
        if field.get("schema") is not None and (convert or field.get("type") is None):
            if not isinstance(field["schema"], (dict, bool)):
                raise TypeSpecError(_join(path, "schema"), "must be a JSON Schema (an object), got "
                                    + json_type(field["schema"]))
            converted, warnings = from_json_schema(field["schema"], path=_join(path, "schema"))
            self.warnings.extend(warnings)
            node = self.type_(converted, _join(path, "schema"), depth)
            self.converted = compact(node)
            if field.get("type") is not None:
                given = self.type_(field["type"], _join(path, "type"), depth)
                if given != node:
                    raise TypeSpecError(_join(path, "type"), "disagrees with the field's schema, which gives "
                                                             f"{describe(node)}; give only one of them")
        elif field.get("type") is not None:
            node = self.type_(field["type"], _join(path, "type"), depth)
        else:
            raise TypeSpecError(path, "needs a 'type' (or a JSON Schema under 'schema')")
        self.modifiers(node, field, path)
        normal = {"name": name, "type": node, "required": required}
        description = field.get("description")
        if isinstance(description, str):
            normal["description"] = description
        return normal


def parse_type(spec: Any, path: str = "") -> dict:
    """Parse and validate a type spec into its normal form; raise TypeSpecError naming the path."""
    return _Parser().type_(spec, path, 1)


def parse_field(field: Mapping[str, Any], path: str = "", *, strict: bool = False) -> dict:
    """Parse one field (its type, required, nullable, enum) into its normal form.

    A stored field's ``type`` already holds what its ``schema`` said, so the schema is converted
    only when there is no type. Unknown keys are refused only when `strict` (nested fields): a
    top-level field is checked by its own schema, which may allow more (such as an output's ``from``).
    """
    return _Parser().field(field, path, 1, strict, convert=False)


def load_field(field: Mapping[str, Any], path: str = "") -> tuple[dict, list[str]]:
    """Validate a field as registered and return (the field to store, warnings).

    A field given as ``schema`` comes back with the converted ``type`` beside its schema; the
    warnings name each place where the schema said more than the model can, which became ``any``.
    """
    parser = _Parser()
    parser.field(field, path, 1, strict=False)
    stored = dict(field)
    if field.get("schema") is not None:
        # The type holds what the schema says; the field's own nullable and enum stay on the field.
        stored["type"] = parser.converted
    return stored, parser.warnings


def normal_type(spec: Any) -> dict:
    """The normal form of a type spec, a parsed normal type, or a field's {"type", ...}."""
    if isinstance(spec, dict) and not _is_normal(spec) and (
            "name" in spec or "schema" in spec or "required" in spec or isinstance(spec.get("type"), dict)):
        return parse_field({"name": spec.get("name") or "value", **spec})["type"]
    if _is_normal(spec):
        return spec
    return parse_type(spec)


def _is_normal(spec: Any) -> bool:
    return isinstance(spec, dict) and len(spec) == 5 and "nullable" in spec and "fields" in spec \
        and "items" in spec and "enum" in spec and spec.get("type") in CANONICAL


def compact(node: Mapping[str, Any]) -> Any:
    """The shortest spec of a normal type: a name when it is only a name, else a dict without defaults."""
    if not (node["nullable"] or node["enum"] is not None or node["items"] is not None
            or node["fields"] is not None):
        return node["type"]
    spec: dict[str, Any] = {"type": node["type"]}
    if node["items"] is not None:
        spec["items"] = compact(node["items"])
    if node["fields"] is not None:
        spec["fields"] = [compact_field(field) for field in node["fields"]]
    if node["nullable"]:
        spec["nullable"] = True
    if node["enum"] is not None:
        spec["enum"] = list(node["enum"])
    return spec


def compact_field(field: Mapping[str, Any]) -> dict:
    out: dict[str, Any] = {"name": field["name"], "type": compact(field["type"])}
    if not field.get("required", True):
        out["required"] = False
    if field.get("description"):
        out["description"] = field["description"]
    return out


# -- JSON Schema ----------------------------------------------------------------------------

_JSON_TYPES = {"string": "string", "integer": "int", "number": "float", "boolean": "bool",
               "object": "object", "array": "array"}
# Keywords that shape a value in ways the model cannot say; they are left unchecked, with a warning.
_UNCHECKED = ("not", "if", "patternProperties", "dependentSchemas", "dependencies", "propertyNames",
              "contains", "unevaluatedProperties", "unevaluatedItems", "additionalItems", "prefixItems")


class _Converter:
    def __init__(self, document: Any):
        self.document = document
        self.warnings: list[str] = []
        self.nodes = 0
        self.level = 0
        self.dropped = 0

    def warn(self, path: str, message: str) -> None:
        if len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(f"{path}: {message}")
        else:
            self.dropped += 1

    def resolve(self, ref: Any) -> tuple[Any, str | None]:
        """A `$ref` inside the document (a JSON pointer, RFC 6901), or why it cannot be followed."""
        if not isinstance(ref, str) or not ref.startswith("#"):
            return None, "is outside this document"
        pointer = unquote(ref[1:])
        if pointer and not pointer.startswith("/"):
            return None, "names an anchor, which is not followed"
        target = self.document
        for token in pointer.split("/")[1:] if pointer else []:
            token = token.replace("~1", "/").replace("~0", "~")
            if isinstance(target, dict) and token in target:
                target = target[token]
            elif isinstance(target, list) and token.isdigit() and int(token) < len(target):
                target = target[int(token)]
            else:
                return None, "points at nothing in this document"
        return target, None

    def convert(self, schema: Any, path: str, depth: int, refs: tuple) -> Any:
        self.level += 1
        try:
            return self._convert(schema, path, depth, refs)
        finally:
            self.level -= 1

    def _convert(self, schema: Any, path: str, depth: int, refs: tuple) -> Any:
        if self.level > MAX_LEVELS:
            # anyOf, allOf and $ref nest without nesting the value: bounded here, not by MAX_DEPTH.
            self.warn(path, f"schemas nested more than {MAX_LEVELS} levels; became any")
            return "any"
        self.nodes += 1
        if self.nodes > MAX_NODES:
            self.warn(path, f"more than {MAX_NODES} types; became any")
            return "any"
        if depth > MAX_DEPTH:
            self.warn(path, f"nested deeper than {MAX_DEPTH} levels; became any")
            return "any"
        if schema is True:
            return "any"
        if not isinstance(schema, dict):
            self.warn(path, "not a schema (expected an object or true); became any")
            return "any"
        if "$ref" in schema:
            return self.reference(schema, path, depth, refs)
        for keyword in _UNCHECKED:
            if keyword in schema:
                self.warn(path, f"{keyword!r} is not checked")
        nullable = schema.get("nullable") is True
        spec = self.union(schema, path, depth, refs)
        if isinstance(spec, tuple):
            spec, union_null = spec
            nullable = nullable or union_null
        elif spec is None:
            spec, typed_null = self.typed(schema, path, depth, refs)
            nullable = nullable or typed_null
        return _with(spec, nullable=nullable)

    def reference(self, schema: dict, path: str, depth: int, refs: tuple) -> Any:
        ref = schema["$ref"]
        target, problem = self.resolve(ref)
        if problem:
            self.warn(path, f"$ref {ref!r} {problem}; became any")
            return "any"
        if id(target) in refs:
            self.warn(path, f"$ref {ref!r} refers to itself; the recursion became any here")
            return "any"
        spec = self.convert(target, path, depth, (*refs, id(target)))
        return _with(spec, nullable=schema.get("nullable") is True)

    def is_null(self, schema: Any, refs: tuple = ()) -> bool:
        if not isinstance(schema, dict) or len(refs) > MAX_LEVELS:
            return False
        if "$ref" in schema:
            target, problem = self.resolve(schema["$ref"])
            return not problem and id(target) not in refs and self.is_null(target, (*refs, id(target)))
        kind = schema.get("type")
        return kind == "null" or kind == ["null"] or schema.get("enum") == [None] or (
            "const" in schema and schema["const"] is None)

    def union(self, schema: dict, path: str, depth: int, refs: tuple) -> Any:
        """anyOf / oneOf / allOf as a type and its nullability, or None when the schema has none."""
        own = any(key in schema for key in ("type", "properties", "items"))
        for keyword in ("anyOf", "oneOf"):
            members = schema.get(keyword)
            if not isinstance(members, list):
                continue
            where = f"{path}.{keyword}"
            rest = [member for member in members if not self.is_null(member)]
            nullable = len(rest) < len(members)
            if own:
                # The schema says its type itself; the alternatives only narrow it.
                spec, typed_null = self.typed(schema, path, depth, refs)
                return spec, nullable or typed_null
            if not rest:
                self.warn(where, "only null; became any")
                return "any", True
            if len(rest) == 1:
                return self.convert(rest[0], f"{where}[{members.index(rest[0])}]", depth, refs), nullable
            converted = [self.convert(member, f"{where}[{index}]", depth, refs)
                         for index, member in enumerate(rest)]
            if all(spec == converted[0] for spec in converted):
                return converted[0], nullable
            if all(spec in ("int", "float") for spec in converted):
                return "float", nullable
            self.warn(where, f"{keyword!r} of several types became any")
            return "any", nullable
        members = schema.get("allOf")
        if isinstance(members, list) and members:
            where = f"{path}.allOf"
            parts = [self.convert(member, f"{where}[{index}]", depth, refs) for index, member in enumerate(members)]
            if own:
                parts.append(self.typed(schema, path, depth, refs)[0])
            return self.merge(parts, where), False
        return None

    def merge(self, parts: list, where: str) -> Any:
        parts = [part for part in parts if part != "any"]
        if not parts:
            return "any"
        if all(part == parts[0] for part in parts):
            return parts[0]
        objects = [part for part in parts if part == "object" or (isinstance(part, dict) and part["type"] == "object"
                                                                  and "enum" not in part)]
        if len(objects) != len(parts):
            self.warn(where, "'allOf' of several types became any")
            return "any"
        fields: dict[str, dict] = {}
        nullable = all(isinstance(part, dict) and part.get("nullable") for part in parts)
        for part in parts:
            for field in part.get("fields") or [] if isinstance(part, dict) else []:
                known = fields.get(field["name"])
                if known is None:
                    fields[field["name"]] = dict(field)
                    continue
                if known["type"] != field["type"]:
                    self.warn(f"{where}.{field['name']}", "declared with different types; became any")
                    known["type"] = "any"
                if field.get("required", True):
                    known.pop("required", None)
        spec: dict[str, Any] = {"type": "object", "fields": list(fields.values())}
        if nullable:
            spec["nullable"] = True
        return spec if fields or nullable else "object"

    def typed(self, schema: dict, path: str, depth: int, refs: tuple) -> tuple[Any, bool]:
        """The type a schema's own keywords give (type, properties, items, enum), and whether it admits null."""
        nullable = False
        kind = schema.get("type")
        if isinstance(kind, list):
            names = [name for name in kind if name != "null"]
            nullable = len(names) < len(kind)
            if not names:
                self.warn(path, "only null; became any")
                return "any", True
            if len(names) == 1:
                kind = names[0]
            elif set(names) <= {"integer", "number"}:
                kind = "number"
            else:
                self.warn(path, f"several types ({', '.join(map(str, names))}) became any")
                return "any", nullable
        enum = schema.get("enum")
        if "const" in schema:
            enum = [schema["const"]]
        if isinstance(enum, list) and None in enum:
            nullable = True
            enum = [value for value in enum if value is not None]
        if kind is None:
            if "properties" in schema:
                kind = "object"
            elif "items" in schema:
                kind = "array"
            elif isinstance(enum, list) and enum:
                kind = _enum_kind(enum)
        if kind == "null":
            self.warn(path, "only null; became any")
            return "any", True
        if kind is None:
            node: dict[str, Any] = {"type": "any"}
        elif kind in _JSON_TYPES:
            node = {"type": _JSON_TYPES[kind]}
        elif kind in ("int", "float", "bool", "any"):
            node = {"type": kind}
        else:
            self.warn(path, f"unknown type {kind!r}; became any")
            return "any", nullable
        if node["type"] == "object":
            self.object(schema, node, path, depth, refs)
        elif node["type"] == "array":
            self.array(schema, node, path, depth, refs)
        if isinstance(enum, list) and enum:
            self.enum(enum, node, path)
        return (node if len(node) > 1 else node["type"]), nullable

    def object(self, schema: dict, node: dict, path: str, depth: int, refs: tuple) -> None:
        properties = schema.get("properties")
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict) and extra and not properties:
            self.warn(f"{path}.additionalProperties", "the values of a map are not typed; it is an object of anything")
        if not isinstance(properties, dict):
            return
        if depth >= MAX_DEPTH:
            self.warn(f"{path}.properties", f"nested deeper than {MAX_DEPTH} levels; became an object of anything")
            return
        if len(properties) > MAX_FIELDS:
            self.warn(f"{path}.properties", f"more than {MAX_FIELDS} properties; became an object of anything")
            return
        required = schema.get("required") if isinstance(schema.get("required"), list) else []
        fields = []
        for name, member in properties.items():
            where = f"{path}.properties.{name}"
            if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME or _BAD_NAME.search(name):
                self.warn(where, f"a property name must be 1 to {MAX_NAME} characters without control "
                                 "characters; left unchecked")
                continue
            field: dict[str, Any] = {"name": name, "type": self.convert(member, where, depth + 1, refs)}
            if name not in required:
                field["required"] = False
            description = member.get("description") if isinstance(member, dict) else None
            if isinstance(description, str) and description:
                field["description"] = description[:2000]
            fields.append(field)
        node["fields"] = fields

    def array(self, schema: dict, node: dict, path: str, depth: int, refs: tuple) -> None:
        items = schema.get("items")
        if isinstance(items, list):
            self.warn(f"{path}.items", "a tuple of items is not checked; an array of anything")
        elif items is not None and items is not True and depth >= MAX_DEPTH:
            self.warn(f"{path}.items", f"nested deeper than {MAX_DEPTH} levels; became an array of anything")
        elif items is not None and items is not True:
            node["items"] = self.convert(items, f"{path}.items", depth + 1, refs)

    def enum(self, values: list, node: dict, path: str) -> None:
        if len(values) > MAX_ENUM:
            self.warn(f"{path}.enum", f"more than {MAX_ENUM} values; not checked")
            return
        checker = _compile(parse_type({key: value for key, value in node.items() if key == "type"}))
        kept, seen = [], set()
        for value in values:
            problems: dict = {}
            checker(value, "", problems)
            key = _enum_key(value)
            if problems or key in seen or isinstance(value, (dict, list)):
                continue
            seen.add(key)
            kept.append(value)
        if len(kept) < len(values):
            self.warn(f"{path}.enum", f"values that are not {_a(node['type'])} (or repeated) were left out")
        if kept:
            node["enum"] = kept


def _with(spec: Any, *, nullable: bool) -> Any:
    if not nullable or spec == "any":
        return spec
    return {**(spec if isinstance(spec, dict) else {"type": spec}), "nullable": True}


def _a(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def _enum_kind(values: list) -> str | None:
    kinds = {json_type(value) for value in values}
    if kinds == {"int", "float"}:
        return "float"
    if len(kinds) == 1 and (kind := kinds.pop()) in ("string", "int", "float", "bool"):
        return kind
    return None


def from_json_schema(schema: Any, document: Any = None, path: str = "schema") -> tuple[Any, list[str]]:
    """Convert a JSON Schema (or an OpenAPI 3.0 / 3.1 schema object) into a type spec.

    `document` is what ``$ref``s point into (default: the schema itself; for OpenAPI, the whole
    document). Returns (spec, warnings): each warning names the path of something the model
    cannot say, which became ``any`` (a recursive reference becomes ``any`` where it recurs).
    """
    converter = _Converter(schema if document is None else document)
    spec = converter.convert(schema, path, 1, ())
    if converter.dropped:
        converter.warnings.append(f"{path}: and {converter.dropped} more warnings")
    return spec, converter.warnings


# -- subtyping ---------------------------------------------------------------------------------


def _segment(path: str, name: str) -> str:
    key = name if _PLAIN_NAME.match(name) else f"[{json.dumps(name)}]"
    if not path:
        return name
    return f"{path}.{key}" if _PLAIN_NAME.match(name) else f"{path}{key}"


def _label(name: str) -> str:
    return name if _PLAIN_NAME.match(name) else json.dumps(name, ensure_ascii=False)


def _fit(produced: dict, wanted: dict, path: str, out: list[str]) -> None:
    where = f"{path}: " if path else ""
    if produced["type"] == "any" or wanted["type"] == "any":
        return
    if produced["nullable"] and not wanted["nullable"]:
        out.append(f"{where}may be null, but {describe(wanted)} may not")
    kind, want = produced["type"], wanted["type"]
    if kind != want and not (kind == "int" and want == "float"):
        out.append(f"{where}expected {describe(wanted)}, got {describe(produced)}")
        return
    if wanted["enum"] is not None:
        if produced["enum"] is None:
            out.append(f"{where}expected one of {_show_enum(wanted['enum'])}, got any {kind}")
        else:
            allowed = {_enum_key(value) for value in wanted["enum"]}
            extra = [value for value in produced["enum"] if _enum_key(value) not in allowed]
            if extra:
                out.append(f"{where}{_show_enum(extra)} {'is' if len(extra) == 1 else 'are'} not among "
                           f"{_show_enum(wanted['enum'])}")
    if want == "array" and wanted["items"] is not None and produced["items"] is not None:
        _fit(produced["items"], wanted["items"], f"{path}[]", out)
    if want == "object" and wanted["fields"] is not None and produced["fields"] is not None:
        have = {field["name"]: field for field in produced["fields"]}
        for field in wanted["fields"]:
            inner = _segment(path, field["name"])
            other = have.get(field["name"])
            if other is None:
                if field["required"]:
                    out.append(f"{inner}: missing (expected {describe(field['type'])})")
                continue
            if field["required"] and not other["required"]:
                out.append(f"{inner}: optional, but required here")
            _fit(other["type"], field["type"], inner, out)


def incompatibilities(produced: Any, wanted: Any, path: str = "") -> list[str]:
    """Why a value of type `produced` may not feed `wanted`: a list of "path: problem", empty when it fits.

    Structural subtyping: extra object fields fit, arrays are covariant, int fits float, required
    fits optional, non-null fits nullable, a smaller enum fits a larger one; ``any`` fits and is
    fitted by everything, and a bare ``object`` or ``array`` holds anything.
    """
    out: list[str] = []
    _fit(normal_type(produced), normal_type(wanted), path, out)
    return out


def compatible(produced: Any, wanted: Any) -> bool:
    """Whether a value declared as `produced` may feed a field declared as `wanted`."""
    if isinstance(produced, str) and isinstance(wanted, str):
        produced, wanted = canonical(produced), canonical(wanted)
        return "any" in (produced, wanted) or produced == wanted or (produced == "int" and wanted == "float")
    return not incompatibilities(produced, wanted)


# -- runtime checks ------------------------------------------------------------------------------


def _is_string(value: Any) -> bool:
    return isinstance(value, str)


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_float(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_object(value: Any) -> bool:
    return isinstance(value, dict)


def _is_array(value: Any) -> bool:
    return isinstance(value, list)


def _is_any(value: Any) -> bool:
    return True


_PREDICATES = {"string": _is_string, "int": _is_int, "float": _is_float, "bool": _is_bool,
               "object": _is_object, "array": _is_array, "any": _is_any}
# Each spelling of a name, to its (canonical name, predicate): the flat fields of version 1 take this path.
_FLAT = {alias: (kind, _PREDICATES[kind]) for alias, kind in ALIASES.items()}


def matches(value: Any, type_name: Any) -> bool:
    """Whether a JSON value is of the declared type (bool is never an int; an int is a float)."""
    if isinstance(type_name, str):
        return _PREDICATES[canonical(type_name)](value)
    problems: dict = {}
    _compile(normal_type(type_name))(value, "", problems)
    return not problems


def _enum_key(value: Any) -> Any:
    # 1 and 1.0 are one value, True and 1 are not; lists and objects compare by their JSON.
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, (int, float)):
        return ("number", value)
    if isinstance(value, str):
        return ("string", value)
    return ("json", json.dumps(value, sort_keys=True))


def _show(value: Any, limit: int = 40) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[:limit] + "…"


def _show_enum(values: list, limit: int = 6) -> str:
    shown = ", ".join(_show(value) for value in values[:limit])
    return shown + (f", … ({len(values)} values)" if len(values) > limit else "")


class _Enough(Exception):
    """Raised when a check has found MAX_PROBLEMS problems: the rest is not worth walking."""


class _Problems(dict):
    def __setitem__(self, key, value):
        if len(self) >= MAX_PROBLEMS:
            raise _Enough
        super().__setitem__(key, value)


Checker = Callable[[Any, str, dict], None]


def _compile(node: Mapping[str, Any]) -> Checker:
    """A function checking one value against a normal type, writing {path: problem} into its dict."""
    kind, nullable = node["type"], node["nullable"] or node["type"] == "any"
    test = _PREDICATES[kind]
    enum = node["enum"]
    allowed = frozenset(_enum_key(value) for value in enum) if enum is not None else None
    shown = _show_enum(enum) if enum is not None else ""
    items = _compile(node["items"]) if node["items"] is not None else None
    members = [(field["name"], field["required"], _compile(field["type"]), describe(field["type"]))
               for field in node["fields"]] if node["fields"] is not None else None

    def check(value: Any, path: str, problems: dict) -> None:
        if value is None:
            if not nullable:
                problems[path] = f"expected {kind}, got null"
            return
        if not test(value):
            problems[path] = f"expected {kind}, got {json_type(value)}"
            return
        if allowed is not None and _enum_key(value) not in allowed:
            problems[path] = f"expected one of {shown}, got {_show(value)}"
            return
        if items is not None:
            for index, item in enumerate(value):
                items(item, f"{path}[{index}]", problems)
        if members is not None:
            for name, required, inner, expected in members:
                where = _segment(path, name)
                if name in value:
                    inner(value[name], where, problems)
                elif required:
                    problems[where] = f"missing (expected {expected})"

    return check


def _compile_test(node: Mapping[str, Any]) -> Callable[[Any], bool]:
    """A function saying only whether a value is of a normal type: the fast pass, run before any path is named."""
    kind, nullable = node["type"], node["nullable"] or node["type"] == "any"
    test = _PREDICATES[kind]
    enum, items, fields = node["enum"], node["items"], node["fields"]
    if enum is None and items is None and fields is None and not node["nullable"]:
        return test
    allowed = frozenset(_enum_key(value) for value in enum) if enum is not None else None
    item_ok = _compile_test(items) if items is not None else None
    members = [(field["name"], field["required"], _compile_test(field["type"]))
               for field in fields] if fields is not None else None

    def ok(value: Any) -> bool:
        if value is None:
            return nullable
        if not test(value) or allowed is not None and _enum_key(value) not in allowed:
            return False
        if item_ok is not None:
            for item in value:
                if not item_ok(item):
                    return False
        if members is not None:
            for name, required, inner in members:
                if name in value:
                    if not inner(value[name]):
                        return False
                elif required:
                    return False
        return True

    return ok


def compile_fields(fields: Iterable[Mapping[str, Any]]) -> Callable[[Mapping[str, Any]], dict[str, str]]:
    """Compile a field list once into a function of data returning {path: problem} (empty when it matches).

    For callers that check many values against one plan's fields: the parsing is done here, once.
    """
    members = []
    for field in fields:
        normal = field if _is_normal(field.get("type")) and "required" in field else parse_field(field)
        members.append((normal["name"], normal["required"], _compile_test(normal["type"]), _compile(normal["type"]),
                        f"missing (expected {describe(normal['type'])})"))

    def check_data(data: Mapping[str, Any]) -> dict[str, str]:
        problems = _Problems()
        try:
            for name, required, ok, inner, missing in members:
                if name in data:
                    if not ok(data[name]):
                        inner(data[name], name, problems)
                elif required:
                    problems[name] = missing
        except _Enough:
            dict.__setitem__(problems, "…", f"more problems than the first {MAX_PROBLEMS}")
        return dict(problems)

    return check_data


# repr is exact for JSON values (1, 1.0 and True differ) and cheap; a dict in another key order is
# only another entry.
_KEY = repr
_FIELD_CACHE: dict[tuple, Callable[[Mapping[str, Any]], dict[str, str]]] = {}


def _field_checker(field: Mapping[str, Any]) -> Callable[[Mapping[str, Any]], dict[str, str]]:
    key = (field["name"], _KEY(field.get("type")), field.get("required", True), field.get("nullable"),
           _KEY(field.get("enum")))
    checker = _FIELD_CACHE.get(key)
    if checker is None:
        if len(_FIELD_CACHE) >= 4096:
            _FIELD_CACHE.clear()
        checker = _FIELD_CACHE[key] = compile_fields([field])
    return checker


def check(data: Mapping[str, Any], fields: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Check data against declared fields; return {path: problem}, empty when it matches.

    A top-level problem is keyed by the field's name, a nested one by its path (``lines[3].sku``).
    """
    problems: dict[str, str] = {}
    for field in fields:
        kind = field["type"]
        flat = _FLAT.get(kind) if kind.__class__ is str else None
        if flat is not None and field.get("required", True) is True and not field.get("nullable") \
                and field.get("enum") is None:
            name = field["name"]
            if name not in data:
                problems[name] = f"missing (expected {flat[0]})"
            elif not flat[1](data[name]):
                problems[name] = f"expected {flat[0]}, got {json_type(data[name])}"
        else:
            problems.update(_field_checker(field)(data))
        if len(problems) >= MAX_PROBLEMS:
            break
    return problems


def check_value(value: Any, spec: Any, path: str) -> dict[str, str]:
    """Check one value against a type, naming each problem by its path under `path`."""
    problems = _Problems()
    try:
        _compile(normal_type(spec))(value, path, problems)
    except _Enough:
        dict.__setitem__(problems, "…", f"more problems than the first {MAX_PROBLEMS}")
    return dict(problems)


# -- describing --------------------------------------------------------------------------------


def _describe(node: Mapping[str, Any]) -> str:
    kind = node["type"]
    if node["enum"] is not None:
        text = "|".join(_show(value, 24) for value in node["enum"][:6])
        text += "|…" if len(node["enum"]) > 6 else ""
        return f"({text})?" if node["nullable"] else text
    if kind == "array" and node["items"] is not None:
        text = f"array<{_describe(node['items'])}>"
    elif kind == "object" and node["fields"] is not None:
        text = "object{" + ", ".join(
            f"{_label(field['name'])}: {_describe(field['type'])}{'' if field['required'] else '?'}"
            .replace("??", "?") for field in node["fields"]) + "}"
    else:
        text = kind
    return f"{text}?" if node["nullable"] and kind != "any" else text


def describe(spec: Any, limit: int | None = None) -> str:
    """A short rendering of a type: ``array<object{sku: string, qty: int}>``; ``string?`` when it may
    be null or, for a field or context entry ({"type", "required"}), be absent; enums as ``"a"|"b"``."""
    optional = isinstance(spec, Mapping) and spec.get("required") is False
    text = _describe(normal_type(spec))
    if optional and not text.endswith("?"):
        text += "?"
    if limit is not None and len(text) > limit:
        text = text[:max(limit - 1, 1)] + "…"
    return text


_EXAMPLES = {"string": "text", "int": 1, "float": 1.5, "bool": True, "object": {}, "array": [], "any": None}


def example(spec: Any) -> Any:
    """A value of the type, to show in forms and documentation: an enum's first value, one item per array."""
    node = normal_type(spec)
    if node["enum"] is not None:
        return node["enum"][0]
    if node["items"] is not None:
        return [example(node["items"])]
    if node["fields"] is not None:
        return {field["name"]: example(field["type"]) for field in node["fields"]}
    value = _EXAMPLES[node["type"]]
    return dict(value) if isinstance(value, dict) else list(value) if isinstance(value, list) else value
