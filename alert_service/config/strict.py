"""A strict YAML loader and a problem locator, independent of what the file configures.

* :func:`read_yaml` parses with PyYAML's safe loader, refusing duplicate keys and
  marking integers written with a leading zero (YAML 1.1 reads ``0443`` as octal 291,
  https://yaml.org/type/int.html), which :func:`yaml_problems` reports with any mapping
  key that is not text;
* :class:`Problems` collects ``(path, message)`` pairs and raises them together as one
  :class:`~alert_service.errors.ConfigError`, each as ``FILE: $.json.path: message``,
  sorted by path (the JSONPath notation of RFC 9535);
* :func:`schema_problems` adds every JSON Schema error of a document and returns the
  paths of the values that failed, and :func:`passed` copies the document without
  them, so the checks beyond the schema still see every key and item that passed and
  one report lists everything;
* :func:`resolve_secrets` replaces ``{env: NAME}`` and ``{file: /path}`` with
  :class:`~alert_service.secret.Secret`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, cast

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from alert_service.errors import ConfigError, ConfigProblem
from alert_service.secret import Secret

__all__ = [
    "PathPart",
    "Problems",
    "as_list",
    "duplicates",
    "is_bad",
    "items",
    "json_path",
    "passed",
    "read_yaml",
    "resolve_secrets",
    "schema_problems",
    "split_where",
    "text",
    "yaml_problems",
]

PathPart = str | int
"""One step of a path into the document: a mapping key or a list index."""


class _StrictLoader(yaml.SafeLoader):
    """Safe YAML loader that rejects duplicate mapping keys and marks leading-zero ints.

    An integer written with a leading zero (``0443``) is octal in YAML 1.1, which
    PyYAML implements: ``remote_port: [0443]`` would be port 291. Such a value is
    loaded as a :class:`_LeadingZeroInt`, which :func:`build_config` refuses.
    """


class _LeadingZeroInt(int):
    """An int YAML read as octal from a plain scalar with a leading zero (``0443``).

    Attributes:
        text: the scalar as written, e.g. ``0443``.
    """

    text: str

    def __new__(cls, value: int, text: str) -> _LeadingZeroInt:
        self = super().__new__(cls, value)
        self.text = text
        return self


# What PyYAML (YAML 1.1) resolves as an octal int: 0 followed by digits or "_".
_OCTAL_RE = re.compile(r"[-+]?0[0-7_]+")


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    value = loader.construct_yaml_int(node)
    text = node.value
    if isinstance(text, str) and node.style is None and _OCTAL_RE.fullmatch(text):
        return _LeadingZeroInt(value, text)
    return value


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str | int | float | bool):
            continue  # unhashable keys are reported by construct_mapping
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"found duplicate key {key!r}",
                key_node.start_mark,
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    cast(Callable[[yaml.SafeLoader, yaml.Node], Any], _construct_mapping),
)
_StrictLoader.add_constructor(
    "tag:yaml.org,2002:int", cast(Callable[[yaml.SafeLoader, yaml.Node], Any], _construct_int)
)


def _shown(value: object) -> str:
    """A YAML scalar as the user wrote it (``0443``, ``null``, ``2020-01-01``)."""
    if isinstance(value, _LeadingZeroInt):
        return value.text
    try:
        return yaml.safe_dump(value).split("\n")[0]
    except yaml.YAMLError:
        return repr(value)


def _decimal(text: str) -> str:
    """``0443`` → ``443``, ``-0_10`` → ``-10``: what the user meant in decimal."""
    sign = text[0] if text[0] in "+-" else ""
    digits = text[len(sign) :].replace("_", "").lstrip("0") or "0"
    return f"{sign}{digits}"


def yaml_problems(
    value: object, parts: tuple[PathPart, ...], problems: Problems
) -> set[tuple[PathPart, ...]]:
    """Report what YAML read differently from how it looks; return those paths.

    Two cases: an integer written with a leading zero (YAML 1.1 octal: ``0443`` is
    291) and a mapping key that is not text (``null:``, ``7:``, ``on:`` — YAML 1.1
    reads ``on`` as true), which no part of the configuration accepts.
    """
    found: set[tuple[PathPart, ...]] = set()
    if isinstance(value, _LeadingZeroInt):
        problems.add(
            parts,
            f"{value.text} is written with a leading zero, which YAML reads as octal "
            f"{int(value)}; write {_decimal(value.text)} (or quote it)",
        )
        found.add(parts)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            at = (*parts, key)
            if not isinstance(key, str):
                problems.add(at, f"the key {_shown(key)} is not text; quote it")
                found.add(at)
            else:
                found |= yaml_problems(item, at, problems)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found |= yaml_problems(item, (*parts, i), problems)
    return found


def read_yaml(path: str) -> object:
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as err:
        problem = ConfigProblem(path, "$", f"cannot read: {err.strerror or err}")
        raise ConfigError([problem]) from err
    except UnicodeDecodeError as err:
        raise ConfigError([ConfigProblem(path, "$", f"not UTF-8 text: {err.reason}")]) from err
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as err:
        where = ""
        mark = getattr(err, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        reason = getattr(err, "problem", None) or str(err)
        raise ConfigError([ConfigProblem(path, "$", f"invalid YAML{where}: {reason}")]) from err


# -- checks ---------------------------------------------------------------------


def json_path(parts: Iterable[object]) -> str:
    """``$.rules[0].remote_port[1]``; a YAML key that is not text (``1.5: x``) is
    written as its text in brackets, ``$.env["1.5"]``."""
    out = "$"
    for part in parts:
        if isinstance(part, int) and not isinstance(part, bool | _LeadingZeroInt):
            out += f"[{part}]"
        elif isinstance(part, str) and part.isidentifier():
            out += f".{part}"
        else:
            text = part if isinstance(part, str) else _shown(part)
            out += f"[{json.dumps(text)}]"
    return out


def _sort_key(parts: Sequence[object]) -> tuple[tuple[int, int, str], ...]:
    return tuple(
        (0, p, "") if isinstance(p, int) and not isinstance(p, bool) else (1, 0, str(p))
        for p in parts
    )


class Problems:
    """Collects problems with their paths, then sorts them."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.items: list[tuple[tuple[PathPart, ...], str]] = []

    def add(self, parts: Iterable[PathPart], message: str) -> None:
        self.items.append((tuple(parts), message))

    def paths_since(self, start: int) -> set[tuple[PathPart, ...]]:
        """Paths of the problems added after the first ``start`` ones."""
        return {p for p, _ in self.items[start:]}

    def under(self, prefix: tuple[PathPart, ...]) -> bool:
        """True when a problem lies at or under ``prefix``."""
        n = len(prefix)
        return any(p[:n] == prefix for p, _ in self.items)

    def raise_if_any(self) -> None:
        if self.items:
            ordered = sorted(self.items, key=lambda item: (_sort_key(item[0]), item[1]))
            raise ConfigError(ConfigProblem(self.file, json_path(p), m) for p, m in ordered)


# Validators that judge a container as a whole (a missing key, too few items): its
# keys and items are still each checked on their own.
_CONTAINER_VALIDATORS = frozenset(
    {"required", "minProperties", "maxProperties", "minItems", "maxItems", "uniqueItems"}
)


# Validators that refuse keys a schema does not declare.
_KEY_VALIDATORS = frozenset({"additionalProperties", "unevaluatedProperties"})


def schema_problems(
    doc: object,
    validator: Draft202012Validator,
    problems: Problems,
    reported: set[tuple[PathPart, ...]],
) -> set[tuple[PathPart, ...]]:
    """Add every schema problem; return the paths of the values that failed.

    A value fails when a check on the value itself does (type, pattern, range, enum);
    a failed container check (``required``, ``minItems``...) leaves the container in,
    and an unknown key fails only that key, so the checks beyond the schema still see
    every key and item that passed. Problems at or under a path in ``reported`` (by
    :func:`yaml_problems`) are left out: the value is not what the user wrote.
    """
    bad: set[tuple[PathPart, ...]] = set(reported)
    for err in validator.iter_errors(doc):
        path = tuple(cast(Iterable[PathPart], err.absolute_path))
        if is_bad(path, reported):
            continue
        problems.add(path, _message(err, validator.schema))
        if err.validator in _KEY_VALIDATORS:
            if isinstance(err.instance, Mapping):
                allowed = _declared_keys(err.schema, validator.schema)
                bad.update((*path, k) for k in err.instance if k not in allowed)
        elif "propertyNames" in err.schema_path:
            bad.add((*path, cast(PathPart, err.instance)))  # the key itself is wrong
        elif err.validator not in _CONTAINER_VALIDATORS:
            bad.add(path)
    return bad


def is_bad(parts: tuple[PathPart, ...], bad: set[tuple[PathPart, ...]]) -> bool:
    """True when ``parts`` or one of its parents is in ``bad``."""
    return any(parts[:n] in bad for n in range(len(parts) + 1))


def passed(value: object, bad: set[tuple[PathPart, ...]], parts: tuple[PathPart, ...]) -> Any:
    """Copy ``value`` without the mapping keys whose path is in ``bad``.

    List items are kept (in place, so the paths of the others stay right); the checks
    beyond the schema skip items of the wrong type and their own problems under a bad
    path are dropped.
    """
    if isinstance(value, Mapping):
        return {k: passed(v, bad, (*parts, k)) for k, v in value.items() if (*parts, k) not in bad}
    if isinstance(value, list):
        return [passed(v, bad, (*parts, i)) for i, v in enumerate(value)]
    return value


def _declared_keys(schema: object, root: object) -> set[str]:
    """The ``properties`` a schema declares, with those of the schemas its local
    ``$ref`` (``#/$defs/...``, RFC 6901 pointers) reaches: the keys that an
    ``additionalProperties: false`` or ``unevaluatedProperties: false`` beside them
    accepts."""
    keys: set[str] = set()
    seen: set[str] = set()
    while isinstance(schema, Mapping):
        keys.update(cast(Mapping[str, Any], schema.get("properties", {})))
        ref = schema.get("$ref")
        if not isinstance(ref, str) or not ref.startswith("#/") or ref in seen:
            break
        seen.add(ref)
        target: object = root
        for token in ref[2:].split("/"):
            part = token.replace("~1", "/").replace("~0", "~")
            target = target.get(part) if isinstance(target, Mapping) else None
        schema = target
    return keys


def _message(err: ValidationError, root: object) -> str:
    if isinstance(err.schema, Mapping) and err.schema.get("x-secret") and err.validator == "type":
        # Never echo the value: it is a secret written inline.
        return "a secret must come from {env: NAME} or {file: /path}; inline text is refused"
    if err.validator in _KEY_VALIDATORS and isinstance(err.instance, Mapping):
        allowed = _declared_keys(err.schema, root)
        extra = sorted(str(k) for k in err.instance if k not in allowed)
        if extra:
            return "unknown key" + ("s " if len(extra) > 1 else " ") + ", ".join(extra)
    return err.message


def resolve_secrets(
    value: Any, parts: tuple[PathPart, ...], environ: Mapping[str, str], problems: Problems
) -> Any:
    if isinstance(value, Mapping):
        if set(value) == {"env"} and isinstance(value["env"], str):
            name = value["env"]
            text = environ.get(name)
            if not text:
                problems.add(parts, f"environment variable {name} is not set or empty")
                return None
            return Secret(text, f"env:{name}")
        if set(value) == {"file"} and isinstance(value["file"], str):
            return _secret_file(value["file"], parts, problems)
        return {k: resolve_secrets(v, (*parts, k), environ, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_secrets(v, (*parts, i), environ, problems) for i, v in enumerate(value)]
    return value


def _secret_file(path: str, parts: tuple[PathPart, ...], problems: Problems) -> Secret | None:
    """Read a ``{file: /path}`` secret: the file's text without its final line end."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read().rstrip("\r\n")
    except OSError as err:
        problems.add(parts, f"cannot read secret file {path}: {err.strerror or err}")
        return None
    except UnicodeDecodeError:
        problems.add(parts, f"secret file {path} is not UTF-8 text")
        return None
    if not text:
        problems.add(parts, f"secret file {path} is empty")
        return None
    return Secret(text, f"file:{path}")


def duplicates(
    items: Sequence[tuple[int, Mapping[str, Any]]], section: str, key: str, problems: Problems
) -> None:
    seen: dict[object, int] = {}
    for i, item in items:
        value = item.get(key)
        if not isinstance(value, str):
            continue
        if value in seen:
            problems.add(
                (section, i, key), f"duplicate {key} {value!r} (also {section}[{seen[value]}])"
            )
        else:
            seen[value] = i


def items(root: object, section: str) -> list[tuple[int, Mapping[str, Any]]]:
    raw = root.get(section) if isinstance(root, Mapping) else None
    if not isinstance(raw, list):
        return []
    return [(i, item) for i, item in enumerate(raw) if isinstance(item, Mapping)]


def text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def as_list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def split_where(where: str) -> tuple[PathPart, ...]:
    """Turn ``.remote_address.include[2]`` into ``("remote_address", "include", 2)``."""
    parts: list[PathPart] = []
    for piece in where.replace("[", ".[").split("."):
        if not piece:
            continue
        if piece.startswith("[") and piece.endswith("]") and piece[1:-1].isdigit():
            parts.append(int(piece[1:-1]))
        else:
            parts.append(piece)
    return tuple(parts)
