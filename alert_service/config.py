"""Load, validate and build the YAML configuration.

Steps (code-style-anchors.md §3, "Config with jsonschema"):

1. read the file and parse YAML (safe loader; duplicate keys are errors); an integer
   written with a leading zero (YAML 1.1 octal: ``0443`` is 291) and a mapping key
   that is not text (``null:``, ``7:``, ``on:``) are problems at their path;
2. validate against schema/config.schema.json (Draft 2020-12, ``additionalProperties:
   false`` everywhere), completed with the registered notifier types and each type's
   own options schema (:attr:`~alert_service.notify.base.Notifier.config_schema`);
3. check what a schema cannot: unique names, ``notify`` references, CIDRs, port
   ranges and regexes (by compiling each rule), ``{env: NAME}`` secrets;
4. build frozen dataclasses with the defaults.

Every problem is collected — step 3 runs on every key, item and value that passed
step 2, even when a sibling, an unknown key or another item of the same list failed,
so fixing one report never reveals new problems — and reported together in one
:class:`~alert_service.errors.ConfigError`, each as ``FILE: $.json.path: message``,
sorted by path.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import Any, cast

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from alert_service.errors import ConfigError, ConfigProblem
from alert_service.match import RuleSpec, check_rule, rule_spec_from_config
from alert_service.notify import DEFAULT_REGISTRY, NotifierRegistry, RetryPolicy
from alert_service.ops.server import MetricsConfig
from alert_service.parse import DEFAULT_KNOWN_PACKS
from alert_service.secret import Secret
from alert_service.source import SourceConfig

__all__ = [
    "Config",
    "NotifierConfig",
    "SourceConfig",
    "base_schema",
    "build_config",
    "config_schema",
    "load_config",
]

PathPart = str | int

DEFAULT_STATE_DIR = "/var/lib/tracked-connections-alerts"
"""Default ``state_dir``: where ``run`` keeps ``state.sqlite3``."""
DEFAULT_CHECKPOINT_EXPIRY_SECS = 7 * 24 * 3600.0
"""Default ``checkpoint_expiry_secs`` (7 days)."""


@dataclass(frozen=True, slots=True)
class NotifierConfig:
    """One destination (an item of ``notifiers``).

    Attributes:
        name: unique name, referenced by rules' ``notify``.
        type: registered notifier type, e.g. ``webhook``.
        options: the entry's other keys, validated against the type's schema, with
            ``{env: NAME}`` replaced by :class:`~alert_service.secret.Secret`.
    """

    name: str
    type: str
    options: Mapping[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True)
class Config:
    """The whole validated configuration.

    Attributes:
        file: the file it was loaded from (for messages).
        sources: logs to follow, in order.
        notifiers: destinations, in order.
        rules: rules, in order.
        delivery: retry policy for each notification.
        known_packs: pack names for splitting ``pack_<pack>_<query>``.
        log_level: ``debug``, ``info``, ``warning`` or ``error``.
        metrics: where ``/metrics`` and ``/health`` listen; None (no ``metrics``
            section) = off.
        state_dir: directory of the state database ``state.sqlite3`` (checkpoints,
            outbox, active rows); default ``/var/lib/tracked-connections-alerts``.
        checkpoint_expiry_secs: a checkpoint of a file no longer followed is deleted
            this long after its last update, seconds (default 7 days).
        rule_baseline: rule name → ``baseline`` mode (``alert``, ``digest`` or
            ``none``) for genuinely new rows of a ``counter`` 0 run; rules not listed
            use ``alert``.
    """

    file: str
    sources: tuple[SourceConfig, ...]
    notifiers: tuple[NotifierConfig, ...]
    rules: tuple[RuleSpec, ...]
    delivery: RetryPolicy = field(default_factory=RetryPolicy)
    known_packs: frozenset[str] = DEFAULT_KNOWN_PACKS
    log_level: str = "info"
    metrics: MetricsConfig | None = None
    state_dir: str = DEFAULT_STATE_DIR
    checkpoint_expiry_secs: float = DEFAULT_CHECKPOINT_EXPIRY_SECS
    rule_baseline: Mapping[str, str] = field(default_factory=dict, hash=False)


# -- schema ---------------------------------------------------------------------


@cache
def base_schema() -> Mapping[str, Any]:
    """Return schema/config.schema.json as shipped (without notifier types)."""
    text = resources.files("alert_service").joinpath("schema/config.schema.json").read_text("utf-8")
    return cast(Mapping[str, Any], json.loads(text))


def config_schema(registry: NotifierRegistry = DEFAULT_REGISTRY) -> dict[str, Any]:
    """Return the complete schema: the base schema plus the registry's notifier types.

    ``$defs.notifier.properties.type`` gets ``enum`` = the registered types, and for
    each type an ``if type == T then <T's options schema + name/type, no other keys>``
    clause is added, so each type validates its own section.
    """
    schema = copy.deepcopy(dict(base_schema()))
    notifier = schema["$defs"]["notifier"]
    types = registry.types()
    notifier["properties"]["type"]["enum"] = list(types)
    clauses: list[dict[str, Any]] = []
    for type_name in types:
        fragment = copy.deepcopy(dict(registry.get(type_name).config_schema))
        # name, type and the delivery options every type accepts ($defs.notifier).
        common = dict.fromkeys(notifier["properties"], True)
        properties = {**common, **fragment.get("properties", {})}
        then: dict[str, Any] = {
            **fragment,
            "type": "object",
            "properties": properties,
            "additionalProperties": False,
        }
        clauses.append(
            {
                "if": {"properties": {"type": {"const": type_name}}, "required": ["type"]},
                "then": then,
            }
        )
    notifier["allOf"] = clauses
    return schema


@cache
def _validator(registry: NotifierRegistry) -> Draft202012Validator:
    schema = config_schema(registry)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


# -- YAML -----------------------------------------------------------------------


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


def _yaml_problems(
    value: object, parts: tuple[PathPart, ...], problems: _Problems
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
                found |= _yaml_problems(item, at, problems)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found |= _yaml_problems(item, (*parts, i), problems)
    return found


def _read_yaml(path: str) -> object:
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


def _json_path(parts: Iterable[object]) -> str:
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


class _Problems:
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
            raise ConfigError(ConfigProblem(self.file, _json_path(p), m) for p, m in ordered)


# Validators that judge a container as a whole (a missing key, too few items): its
# keys and items are still each checked on their own.
_CONTAINER_VALIDATORS = frozenset(
    {"required", "minProperties", "maxProperties", "minItems", "maxItems", "uniqueItems"}
)


def _schema_problems(
    doc: object,
    registry: NotifierRegistry,
    problems: _Problems,
    reported: set[tuple[PathPart, ...]],
) -> set[tuple[PathPart, ...]]:
    """Add every schema problem; return the paths of the values that failed.

    A value fails when a check on the value itself does (type, pattern, range, enum);
    a failed container check (``required``, ``minItems``...) leaves the container in,
    and an unknown key fails only that key, so the checks beyond the schema still see
    every key and item that passed. Problems at or under a path in ``reported`` (by
    :func:`_yaml_problems`) are left out: the value is not what the user wrote.
    """
    bad: set[tuple[PathPart, ...]] = set(reported)
    for err in _validator(registry).iter_errors(doc):
        path = tuple(cast(Iterable[PathPart], err.absolute_path))
        if _is_bad(path, reported):
            continue
        problems.add(path, _message(err))
        if err.validator == "additionalProperties":
            if isinstance(err.instance, Mapping):
                allowed = set(cast(Mapping[str, Any], err.schema).get("properties", {}))
                bad.update((*path, k) for k in err.instance if k not in allowed)
        elif "propertyNames" in err.schema_path:
            bad.add((*path, cast(PathPart, err.instance)))  # the key itself is wrong
        elif err.validator not in _CONTAINER_VALIDATORS:
            bad.add(path)
    return bad


def _is_bad(parts: tuple[PathPart, ...], bad: set[tuple[PathPart, ...]]) -> bool:
    """True when ``parts`` or one of its parents is in ``bad``."""
    return any(parts[:n] in bad for n in range(len(parts) + 1))


def _passed(value: object, bad: set[tuple[PathPart, ...]], parts: tuple[PathPart, ...]) -> Any:
    """Copy ``value`` without the mapping keys whose path is in ``bad``.

    List items are kept (in place, so the paths of the others stay right); the checks
    beyond the schema skip items of the wrong type and their own problems under a bad
    path are dropped.
    """
    if isinstance(value, Mapping):
        return {k: _passed(v, bad, (*parts, k)) for k, v in value.items() if (*parts, k) not in bad}
    if isinstance(value, list):
        return [_passed(v, bad, (*parts, i)) for i, v in enumerate(value)]
    return value


def _message(err: ValidationError) -> str:
    if isinstance(err.schema, Mapping) and err.schema.get("x-secret") and err.validator == "type":
        # Never echo the value: it is a secret written inline.
        return "a secret must come from {env: NAME} or {file: /path}; inline text is refused"
    if err.validator == "additionalProperties" and isinstance(err.instance, Mapping):
        allowed = set(cast(Mapping[str, Any], err.schema).get("properties", {}))
        extra = sorted(str(k) for k in err.instance if k not in allowed)
        if extra:
            return "unknown key" + ("s " if len(extra) > 1 else " ") + ", ".join(extra)
    return err.message


def _resolve_secrets(
    value: Any, parts: tuple[PathPart, ...], environ: Mapping[str, str], problems: _Problems
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
        return {k: _resolve_secrets(v, (*parts, k), environ, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_secrets(v, (*parts, i), environ, problems) for i, v in enumerate(value)]
    return value


def _secret_file(path: str, parts: tuple[PathPart, ...], problems: _Problems) -> Secret | None:
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


def _duplicates(
    items: Sequence[tuple[int, Mapping[str, Any]]], section: str, key: str, problems: _Problems
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


# -- building -------------------------------------------------------------------


def _rule_spec(raw: Mapping[str, Any]) -> RuleSpec:
    return rule_spec_from_config(raw)


def _delivery(raw: Mapping[str, Any]) -> RetryPolicy:
    return RetryPolicy.from_config(raw)


def _items(root: object, section: str) -> list[tuple[int, Mapping[str, Any]]]:
    raw = root.get(section) if isinstance(root, Mapping) else None
    if not isinstance(raw, list):
        return []
    return [(i, item) for i, item in enumerate(raw) if isinstance(item, Mapping)]


def build_config(
    doc: object,
    file: str = "<config>",
    *,
    registry: NotifierRegistry = DEFAULT_REGISTRY,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Validate a parsed document and build the :class:`Config`.

    Args:
        doc: the parsed YAML/JSON document.
        file: name used in problem messages.
        registry: notifier types to accept.
        environ: environment for ``{env: NAME}`` (default ``os.environ``).

    Raises:
        ConfigError: with every problem found, sorted by JSON path.
    """
    env = os.environ if environ is None else environ
    problems = _Problems(file)
    bad: set[tuple[PathPart, ...]] = set()
    if doc is None:
        problems.add((), "the configuration is empty")
    else:
        bad = _schema_problems(doc, registry, problems, _yaml_problems(doc, (), problems))
    if not isinstance(doc, Mapping):
        problems.raise_if_any()
    # The checks beyond the schema run on every key and item that passed it — even
    # when a sibling, an unknown key or another list item failed — so one report
    # lists everything. ``root`` is the document without the values that failed.
    root = cast(Mapping[str, Any], _passed(doc, bad, ()))
    sources = _items(root, "sources")
    notifier_items = _items(root, "notifiers")
    rule_items = _items(root, "rules")
    _duplicates(sources, "sources", "path", problems)
    _duplicates(sources, "sources", "glob", problems)
    for i, item in _items(doc, "sources"):  # as written: a bad path is still a path
        if ("path" in item) == ("glob" in item):
            problems.add(("sources", i), "give exactly one of path or glob")
    _duplicates(notifier_items, "notifiers", "name", problems)
    _duplicates(rule_items, "rules", "name", problems)
    notifier_names = {_text(item.get("name")) for _, item in _items(doc, "notifiers")}

    notifiers: list[NotifierConfig] = []
    for i, item in notifier_items:
        notifiers.append(
            _notifier(
                item, ("notifiers", i), registry=registry, env=env, bad=bad, problems=problems
            )
        )

    rules: list[RuleSpec] = []
    for i, item in rule_items:
        for j, target in enumerate(_list(item.get("notify"))):
            if isinstance(target, str) and target not in notifier_names:
                problems.add(("rules", i, "notify", j), f"no notifier named {target!r}")
        spec = _rule_spec(item)
        for err in check_rule(spec):
            where = ("rules", i, *_split_where(err.where))
            if not _is_bad(where, bad):  # a value of the wrong type, reported already
                problems.add(where, str(err))
        rules.append(spec)

    problems.raise_if_any()
    return Config(
        file=file,
        sources=tuple(SourceConfig.from_config(item) for _, item in sources),
        notifiers=tuple(notifiers),
        rules=tuple(rules),
        delivery=_delivery(root.get("delivery", {})),
        known_packs=frozenset(root.get("known_packs", DEFAULT_KNOWN_PACKS)),
        log_level=root.get("log_level", "info"),
        metrics=MetricsConfig.from_config(root.get("metrics")),
        state_dir=root.get("state_dir", DEFAULT_STATE_DIR),
        checkpoint_expiry_secs=float(
            root.get("checkpoint_expiry_secs", DEFAULT_CHECKPOINT_EXPIRY_SECS)
        ),
        rule_baseline=MappingProxyType(
            {
                item["name"]: item.get("baseline", "alert")
                for _, item in rule_items
                if isinstance(item.get("name"), str)
            }
        ),
    )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _notifier(
    item: Mapping[str, Any],
    at: tuple[PathPart, ...],
    *,
    registry: NotifierRegistry,
    env: Mapping[str, str],
    bad: set[tuple[PathPart, ...]],
    problems: _Problems,
) -> NotifierConfig:
    """Resolve the secrets of one notifier entry (its failed values left out) and run
    its type's :meth:`~alert_service.notify.base.Notifier.check_options`."""
    options = {k: v for k, v in item.items() if k not in ("name", "type")}
    before = len(problems.items)
    resolved = _resolve_secrets(options, at, env, problems)
    # An unresolved secret is None now: its problem is reported, do not check it again.
    skip = bad | problems.paths_since(before)
    type_name = _text(item.get("type"))
    if type_name is not None and type_name in registry.types():
        try:
            found = registry.get(type_name).check_options(resolved)
        except (TypeError, ValueError, KeyError, AttributeError) as err:
            # A check tripped over a malformed value; the schema problems say which.
            if not problems.under(at):
                problems.add(at, f"cannot check the options: {type(err).__name__}: {err}")
            found = []
        for where, message in found:
            if not _is_bad((*at, *where), skip):
                problems.add((*at, *where), message)
    name = _text(item.get("name")) or ""
    return NotifierConfig(name, type_name or "", MappingProxyType(resolved))


def _split_where(where: str) -> tuple[PathPart, ...]:
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


def load_config(
    path: str,
    *,
    registry: NotifierRegistry = DEFAULT_REGISTRY,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Read, validate and build the configuration in ``path``.

    Args:
        path: YAML file (JSON works too, being YAML).
        registry: notifier types to accept.
        environ: environment for ``{env: NAME}`` (default ``os.environ``).

    Returns:
        The frozen :class:`Config`.

    Raises:
        ConfigError: the file is unreadable, not YAML, or invalid; every problem is
            listed as ``FILE: $.json.path: message``.
    """
    return build_config(_read_yaml(path), path, registry=registry, environ=environ)
