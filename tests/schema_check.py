"""A quick proof that a request body is valid under one of tests/schemas' JSON Schemas.

jsonschema descends into every property of every message with a new validator object per
step (0.2 ms a Postmark message, 80 ms a SendGrid call to 1,000 readers: ~3 s of the
suite's CPU in the fake ESP). `proof` turns a schema into plain predicates that answer True
only when jsonschema finds no error; False means "not proven", and the caller asks
jsonschema, which also words the error. A schema node with a keyword not handled here is
left to jsonschema as it is (its `is_valid`), so the answer never depends on this file
knowing every keyword.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Check = Callable[[Any], bool]


def _yes(_: Any) -> bool:
    return True


def _no(_: Any) -> bool:
    return False


def _number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


TYPES: dict[str, Check] = {
    "string": lambda x: isinstance(x, str),
    "object": lambda x: isinstance(x, dict),
    "array": lambda x: isinstance(x, list),
    "boolean": lambda x: isinstance(x, bool),
    "null": lambda x: x is None,
    "integer": lambda x: isinstance(x, int) and not isinstance(x, bool),
    "number": _number,
}
# Types no value has two of (jsonschema: a bool is no number, an integer is a number)
KINDS = {"string": 1, "object": 2, "array": 3, "boolean": 4, "null": 5, "integer": 6, "number": 6}
# keyword -> the type it counts the length of
SIZED = {"minLength": str, "maxLength": str, "minItems": list, "maxItems": list,
         "minProperties": dict, "maxProperties": dict}  # fmt: skip
# The keywords checked here; a node with another of jsonschema's goes to jsonschema
HANDLED = {"type", "properties", "additionalProperties", "required", "items", "pattern",
           "enum", "const", "$ref", "anyOf", "allOf", "oneOf", "format", "uniqueItems",
           "minimum", "maximum", *SIZED}  # fmt: skip


def proof(schema: Any, validator: Any) -> Check:
    """A predicate over instances: True only if `validator` (jsonschema's, for `schema`,
    without a format checker) finds no error."""
    refs: dict[str, Check] = {}

    def ref(pointer: str) -> Check:
        if pointer not in refs:
            target = schema
            for part in pointer[2:].split("/") if pointer != "#" else []:
                target = target[part.replace("~1", "/").replace("~0", "~")]
            cell: list[Check] = []
            refs[pointer] = lambda x: cell[0](x)  # bound below (a schema may refer to itself)
            cell.append(node(target))
        return refs[pointer]

    def node(s: Any) -> Check:
        if s is True or s is False:
            return _yes if s else _no
        validating = s.keys() & validator.VALIDATORS.keys()
        checks = None if validating - HANDLED else [keyword(k, s[k], s) for k in validating]
        if checks is None or any(c is None for c in checks):
            return validator.evolve(schema=s).is_valid  # jsonschema's own answer
        checks = [c for c in checks if c is not _yes]
        if len(checks) == 1:
            return checks[0]
        return lambda x: all(c(x) for c in checks)

    def keyword(name: str, value: Any, s: dict[str, Any]) -> Check | None:
        if name in SIZED:
            kind = SIZED[name]
            if name.startswith("min"):
                return lambda x: not isinstance(x, kind) or len(x) >= value
            return lambda x: not isinstance(x, kind) or len(x) <= value
        if name in ("minimum", "maximum"):
            if name == "minimum":
                return lambda x: not _number(x) or x >= value
            return lambda x: not _number(x) or x <= value
        if name == "type":
            names = value if isinstance(value, list) else [value]
            if not all(n in TYPES for n in names):
                return None
            tests = [TYPES[n] for n in names]
            return tests[0] if len(tests) == 1 else lambda x: any(t(x) for t in tests)
        if name == "properties" or name == "additionalProperties":
            if "patternProperties" in s:
                return None
            return _object(s) if name == "properties" or "properties" not in s else _yes
        if name == "required":
            return lambda x: not isinstance(x, dict) or all(k in x for k in value)
        if name == "items":
            if "prefixItems" in s:
                return None
            each = node(value)
            return lambda x: not isinstance(x, list) or all(each(i) for i in x)
        if name == "pattern":
            search = re.compile(value).search
            return lambda x: not isinstance(x, str) or search(x) is not None
        if name == "enum" or name == "const":
            values = value if name == "enum" else [value]
            members = {v for v in values if v is None or isinstance(v, str)}
            return lambda x: (x is None or isinstance(x, str)) and x in members  # others: unproven
        if name == "format":
            return _yes if validator.format_checker is None else None
        if name == "uniqueItems":
            if not value:
                return _yes
            return lambda x: (
                not isinstance(x, list)
                or (all(isinstance(i, str) for i in x) and len(set(x)) == len(x))
            )
        if name == "$ref":
            return ref(value) if isinstance(value, str) and value.startswith("#") else None
        if name == "oneOf" and not _disjoint(value):
            return None  # more than one could match: jsonschema decides
        subs = [node(v) for v in value]  # anyOf, allOf, oneOf of types no value has two of
        if name == "allOf":
            return lambda x: all(c(x) for c in subs)
        return lambda x: any(c(x) for c in subs)

    def _object(s: dict[str, Any]) -> Check:
        known = {k: node(v) for k, v in (s.get("properties") or {}).items()}
        extra = node(s["additionalProperties"]) if "additionalProperties" in s else _yes

        def check(x: Any) -> bool:
            if not isinstance(x, dict):
                return True
            return all(known.get(k, extra)(v) for k, v in x.items())

        return check

    return node(schema)


def _disjoint(schemas: list[Any]) -> bool:
    """Each schema names its types, and no two share one: at most one can match."""
    seen: set[int] = set()
    for s in schemas:
        names = s.get("type") if isinstance(s, dict) else None
        kinds = {KINDS.get(n, 0) for n in (names if isinstance(names, list) else [names])}
        if names is None or 0 in kinds or kinds & seen:
            return False
        seen |= kinds
    return True
