"""Load, validate and build the YAML configuration.

Steps (code-style-anchors.md §3, "Config with jsonschema"):

1. read the file and parse YAML (safe loader; duplicate keys are errors);
2. validate against schema/config.schema.json (Draft 2020-12, ``additionalProperties:
   false`` everywhere), completed with the registered notifier types and each type's
   own options schema (:attr:`~alert_service.notify.base.Notifier.config_schema`);
3. check what a schema cannot: unique names, ``notify`` references, CIDRs, port
   ranges and regexes (by compiling each rule), ``{env: NAME}`` secrets;
4. build frozen dataclasses with the defaults.

Every problem is collected — step 3 runs on every part that passed step 2 — and
reported together in one :class:`~alert_service.errors.ConfigError`, each as
``FILE: $.json.path: message``, sorted by path.
"""

from __future__ import annotations

import copy
import json
import os
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
from alert_service.source import (
    DEFAULT_MAX_LINE_BYTES,
    DEFAULT_PARTIAL_LINE_FLUSH_SECS,
    DEFAULT_POLL_INTERVAL_SECS,
    StartAt,
)

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
DEFAULT_STALE_AFTER_SECS = 300.0
"""Default ``sources[].stale_after_secs`` (5 minutes)."""


@dataclass(frozen=True, slots=True)
class SourceConfig:
    """One results log to follow (an item of ``sources``).

    Attributes:
        path: the log file, e.g. ``/var/log/osquery/osqueryd.results.log``; with
            ``glob`` true, a pattern naming several live logs (each followed alone).
        glob: True when the entry was given as ``glob:`` instead of ``path:``.
        start_at: ``end`` (default) skips what the file holds when ``run`` starts
            for the first time (no checkpoint); ``beginning`` reads it. Files
            appearing later are always read whole; with a checkpoint, ``run``
            resumes where it stopped.
        max_line_bytes: longest accepted line, bytes (default 1 MiB).
        poll_interval_secs: pause between polls, seconds (default 0.25).
        partial_line_flush_secs: how long the unterminated last line of a finished
            (rotated/deleted) file may stay unchanged before it is taken as a line,
            seconds (default 5).
        stale_after_secs: a source with no new line for this long logs
            ``source_stale`` and counts in the ``stale_sources`` gauge, seconds
            (default 300).
    """

    path: str
    start_at: StartAt = "end"
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    poll_interval_secs: float = DEFAULT_POLL_INTERVAL_SECS
    glob: bool = False
    partial_line_flush_secs: float = DEFAULT_PARTIAL_LINE_FLUSH_SECS
    stale_after_secs: float = DEFAULT_STALE_AFTER_SECS


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
    """Safe YAML loader that rejects duplicate mapping keys."""


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


def _json_path(parts: Iterable[PathPart]) -> str:
    out = "$"
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.isidentifier():
            out += f".{part}"
        else:
            out += f"[{json.dumps(part)}]"
    return out


def _sort_key(parts: Sequence[PathPart]) -> tuple[tuple[int, int, str], ...]:
    return tuple((0, p, "") if isinstance(p, int) else (1, 0, str(p)) for p in parts)


class _Problems:
    """Collects problems with their paths, then sorts them."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.items: list[tuple[tuple[PathPart, ...], str]] = []

    def add(self, parts: Iterable[PathPart], message: str) -> None:
        self.items.append((tuple(parts), message))

    def under(self, prefix: tuple[PathPart, ...]) -> bool:
        """True when a problem lies at or under ``prefix``."""
        n = len(prefix)
        return any(p[:n] == prefix for p, _ in self.items)

    def raise_if_any(self) -> None:
        if self.items:
            ordered = sorted(self.items, key=lambda item: (_sort_key(item[0]), item[1]))
            raise ConfigError(ConfigProblem(self.file, _json_path(p), m) for p, m in ordered)


def _schema_problems(doc: object, registry: NotifierRegistry, problems: _Problems) -> None:
    for err in _validator(registry).iter_errors(doc):
        problems.add(cast(Iterable[PathPart], err.absolute_path), _message(err))


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


def _source(raw: Mapping[str, Any]) -> SourceConfig:
    pattern = raw.get("glob")
    return SourceConfig(
        path=raw["path"] if pattern is None else pattern,
        glob=pattern is not None,
        start_at=raw.get("start_at", "end"),
        max_line_bytes=raw.get("max_line_bytes", DEFAULT_MAX_LINE_BYTES),
        poll_interval_secs=float(raw.get("poll_interval_secs", DEFAULT_POLL_INTERVAL_SECS)),
        partial_line_flush_secs=float(
            raw.get("partial_line_flush_secs", DEFAULT_PARTIAL_LINE_FLUSH_SECS)
        ),
        stale_after_secs=float(raw.get("stale_after_secs", DEFAULT_STALE_AFTER_SECS)),
    )


def _delivery(raw: Mapping[str, Any]) -> RetryPolicy:
    return RetryPolicy.from_config(raw)


def _items(root: Mapping[str, Any], section: str) -> list[tuple[int, Mapping[str, Any]]]:
    raw = root.get(section)
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
    if doc is None:
        problems.add((), "the configuration is empty")
    else:
        _schema_problems(doc, registry, problems)
    if not isinstance(doc, Mapping):
        problems.raise_if_any()
    root = cast(Mapping[str, Any], doc)
    # Checks beyond the schema run on every item that passed it, so one report
    # lists everything.
    sources = _items(root, "sources")
    notifier_items = _items(root, "notifiers")
    rule_items = _items(root, "rules")
    _duplicates(sources, "sources", "path", problems)
    _duplicates(sources, "sources", "glob", problems)
    for i, item in sources:
        if ("path" in item) == ("glob" in item):
            problems.add(("sources", i), "give exactly one of path or glob")
    _duplicates(notifier_items, "notifiers", "name", problems)
    _duplicates(rule_items, "rules", "name", problems)
    notifier_names = {item.get("name") for _, item in notifier_items}

    notifiers: list[NotifierConfig] = []
    for i, item in notifier_items:
        if problems.under(("notifiers", i)):
            continue
        options = {k: v for k, v in item.items() if k not in ("name", "type")}
        resolved = _resolve_secrets(options, ("notifiers", i), env, problems)
        if not problems.under(("notifiers", i)):
            for where, message in registry.get(item["type"]).check_options(resolved):
                problems.add(("notifiers", i, *where), message)
        notifiers.append(NotifierConfig(item["name"], item["type"], MappingProxyType(resolved)))

    rules: list[RuleSpec] = []
    for i, item in rule_items:
        # Check each key that passed the schema, even when a sibling did not.
        clean = {k: v for k, v in item.items() if not problems.under(("rules", i, k))}
        for j, target in enumerate(clean.get("notify", ())):
            if target not in notifier_names:
                problems.add(("rules", i, "notify", j), f"no notifier named {target!r}")
        spec = _rule_spec(clean)
        for err in check_rule(spec):
            problems.add(("rules", i, *_split_where(err.where)), str(err))
        rules.append(spec)

    problems.raise_if_any()
    return Config(
        file=file,
        sources=tuple(_source(item) for _, item in sources),
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
