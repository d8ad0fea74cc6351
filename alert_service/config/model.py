"""The product's configuration model: what ``tracked-connections-alerts`` reads.

Steps (the generic parts in :mod:`alert_service.config.strict`):

1. read the file and parse YAML (safe loader; duplicate keys are errors); an integer
   written with a leading zero (YAML 1.1 octal: ``0443`` is 291) and a mapping key
   that is not text (``null:``, ``7:``, ``on:``) are problems at their path;
2. validate against schema/config.schema.json (JSON Schema Draft 2020-12,
   https://json-schema.org/draft/2020-12, ``additionalProperties: false``
   everywhere), completed with the registered notifier types and each type's own
   options schema (:attr:`~alert_service.notify.base.Notifier.config_schema`);
3. check what a schema cannot: unique names, ``notify`` references, CIDRs, port
   ranges and regexes (by compiling each rule), ``{env: NAME}`` secrets;
4. build frozen dataclasses with the defaults. Each stage owns its part's type:
   :class:`~alert_service.source.SourceConfig` (``sources``),
   :class:`~alert_service.match.RuleSpec` (``rules``, the baseline mode included),
   :class:`~alert_service.deliver.retry.RetryPolicy` (``delivery``),
   :class:`~alert_service.ops.config.MetricsConfig` (``metrics``),
   :class:`~alert_service.state.config.StateSettings` (``state``).

Every problem is collected — step 3 runs on every key, item and value that passed
step 2, even when a sibling, an unknown key or another item of the same list failed,
so fixing one report never reveals new problems — and reported together in one
:class:`~alert_service.errors.ConfigError`, each as ``FILE: $.json.path: message``,
sorted by path.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import Any, cast

from jsonschema import Draft202012Validator

from alert_service.config.strict import (
    PathPart,
    Problems,
    as_list,
    duplicates,
    is_bad,
    items,
    passed,
    read_yaml,
    resolve_secrets,
    schema_problems,
    split_where,
    text,
    yaml_problems,
)
from alert_service.console.config import ConsoleConfig, is_loopback
from alert_service.deliver.retry import RetryPolicy
from alert_service.match import (
    ANY_QUERY,
    BaselineMode,
    RuleSpec,
    check_rule,
    rule_spec_from_config,
)
from alert_service.match.aggregate import (
    AggregateRule,
    aggregate_rule_from_config,
    check_aggregate_rule,
    is_aggregate_item,
)
from alert_service.notify import DEFAULT_REGISTRY, NotifierRegistry
from alert_service.ops.config import MetricsConfig
from alert_service.parse import DEFAULT_KNOWN_PACKS
from alert_service.source.kinds import AnySourceConfig, source_config, source_problems
from alert_service.state.config import StateSettings

__all__ = [
    "DEFAULT_CHECKPOINT_EXPIRY_SECS",
    "DEFAULT_QUERIES",
    "DEFAULT_STATE_DIR",
    "Config",
    "NotifierConfig",
    "base_schema",
    "build_config",
    "config_schema",
    "load_config",
]

DEFAULT_STATE_DIR = "/var/lib/tracked-connections-alerts"
"""Default ``state_dir``: where ``run`` keeps ``state.sqlite3``."""
DEFAULT_CHECKPOINT_EXPIRY_SECS = 7 * 24 * 3600.0
DEFAULT_QUERIES: tuple[str, ...] = ("tracked_connections",)
"""Default top-level ``queries``: the pack's query (packs/tracked_connections.conf)."""
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
        rules: row rules, in order.
        aggregate_rules: aggregation and beacon rules (items of ``rules`` with an
            ``aggregate`` or ``beacon`` key), in order.
        delivery: retry policy for each notification.
        known_packs: pack names for splitting ``pack_<pack>_<query>``.
        queries: the pack's queries (full logged name or query part; ``*`` = every
            query): a rule without its own ``queries`` sees only their rows, and only
            their rows are typed strictly by the column contract. Default
            ``("tracked_connections",)``.
        log_level: ``debug``, ``info``, ``warning`` or ``error``.
        metrics: where ``/metrics`` and ``/health`` listen; None (no ``metrics``
            section) = off.
        state_dir: directory of the state database ``state.sqlite3`` (checkpoints,
            outbox, active rows); default ``/var/lib/tracked-connections-alerts``.
        checkpoint_expiry_secs: a checkpoint of a file no longer followed is deleted
            this long after its last update, seconds (default 7 days).
        state: which state backend and where (:class:`StateSettings`; SQLite in
            ``state_dir`` by default).
        console: the web console (:class:`~alert_service.console.config.ConsoleConfig`),
            or None when off.
    """

    file: str
    sources: tuple[AnySourceConfig, ...]
    notifiers: tuple[NotifierConfig, ...]
    rules: tuple[RuleSpec, ...]
    delivery: RetryPolicy = field(default_factory=RetryPolicy)
    known_packs: frozenset[str] = DEFAULT_KNOWN_PACKS
    queries: tuple[str, ...] = DEFAULT_QUERIES
    log_level: str = "info"
    metrics: MetricsConfig | None = None
    console: ConsoleConfig | None = None
    state_dir: str = DEFAULT_STATE_DIR
    checkpoint_expiry_secs: float = DEFAULT_CHECKPOINT_EXPIRY_SECS
    state: StateSettings = field(default_factory=StateSettings)
    aggregate_rules: tuple[AggregateRule, ...] = ()

    @property
    def strict_queries(self) -> frozenset[str]:
        """Query names whose rows are typed strictly (``queries`` without ``*``)."""
        return frozenset(q for q in self.queries if q != ANY_QUERY)

    @property
    def rule_baseline(self) -> Mapping[str, BaselineMode]:
        """Rule name → its ``baseline`` mode (:attr:`RuleSpec.baseline`)."""
        return MappingProxyType({rule.name: rule.baseline for rule in self.rules})


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


_BUILTIN_TYPES: tuple[str, ...] = DEFAULT_REGISTRY.types()
"""The notifier types shipped (registered when :mod:`alert_service.notify` is imported)."""


@cache
def _validator(registry: NotifierRegistry) -> Draft202012Validator:
    """The validator of ``registry``'s configuration schema.

    The schema of the default registry is checked against the metaschema by the
    tests (tests/alert_service/config/test_config_schema.py), not on every start:
    that check costs about as much as reading a 10k-entry IOC list (70 ms). A schema
    with other notifier types (another registry, or a type registered later) is
    checked here.
    """
    schema = config_schema(registry)
    if registry is not DEFAULT_REGISTRY or registry.types() != _BUILTIN_TYPES:
        Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


# -- building -------------------------------------------------------------------


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
    problems = Problems(file)
    bad: set[tuple[PathPart, ...]] = set()
    if doc is None:
        problems.add((), "the configuration is empty")
    else:
        bad = schema_problems(doc, _validator(registry), problems, yaml_problems(doc, (), problems))
    if not isinstance(doc, Mapping):
        problems.raise_if_any()
    # The checks beyond the schema run on every key and item that passed it — even
    # when a sibling, an unknown key or another list item failed — so one report
    # lists everything. ``root`` is the document without the values that failed.
    root = cast(Mapping[str, Any], passed(doc, bad, ()))
    sources = items(root, "sources")
    notifier_items = items(root, "notifiers")
    rule_items = items(root, "rules")
    duplicates(sources, "sources", "path", problems)
    duplicates(sources, "sources", "glob", problems)
    for i, item in items(doc, "sources"):  # as written: a bad path is still a path
        for message in source_problems(item):
            problems.add(("sources", i), message)
    duplicates(notifier_items, "notifiers", "name", problems)
    duplicates(rule_items, "rules", "name", problems)
    notifier_names = {text(item.get("name")) for _, item in items(doc, "notifiers")}

    notifiers: list[NotifierConfig] = []
    for i, item in notifier_items:
        notifiers.append(
            _notifier(
                item, ("notifiers", i), registry=registry, env=env, bad=bad, problems=problems
            )
        )

    queries = tuple(root.get("queries", DEFAULT_QUERIES))
    rules: list[RuleSpec] = []
    aggregate_rules: list[AggregateRule] = []
    for i, item in rule_items:
        for j, target in enumerate(as_list(item.get("notify"))):
            if isinstance(target, str) and target not in notifier_names:
                problems.add(("rules", i, "notify", j), f"no notifier named {target!r}")
        if is_aggregate_item(item):
            aggregate = aggregate_rule_from_config(item)
            for err in check_aggregate_rule(aggregate):
                where = ("rules", i, *split_where(err.where))
                if not is_bad(where, bad):
                    problems.add(where, str(err))
            aggregate_rules.append(aggregate)
            continue
        spec = rule_spec_from_config(item)
        for err in check_rule(spec):
            where = ("rules", i, *split_where(err.where))
            if not is_bad(where, bad):  # a value of the wrong type, reported already
                problems.add(where, str(err))
        if spec.queries is None and ANY_QUERY not in queries:
            spec = dataclasses.replace(spec, queries=queries)  # the pack's rows only
        rules.append(spec)

    state_raw = root.get("state")
    state_settings: dict[str, Any] = {}
    if isinstance(state_raw, Mapping):
        state_settings = resolve_secrets(dict(state_raw), ("state",), env, problems)
        if state_raw.get("backend") == "postgresql" and "dsn" not in state_raw:
            problems.add(("state",), "backend postgresql needs dsn ({env: NAME})")

    console = _console(root, env, problems)
    problems.raise_if_any()
    return Config(
        file=file,
        sources=tuple(source_config(item) for _, item in sources),
        notifiers=tuple(notifiers),
        rules=tuple(rules),
        aggregate_rules=tuple(aggregate_rules),
        delivery=RetryPolicy.from_config(root.get("delivery", {})),
        known_packs=frozenset(root.get("known_packs", DEFAULT_KNOWN_PACKS)),
        queries=queries,
        log_level=root.get("log_level", "info"),
        metrics=MetricsConfig.from_config(root.get("metrics")),
        state=StateSettings.from_config(state_settings),
        console=console,
        state_dir=root.get("state_dir", DEFAULT_STATE_DIR),
        checkpoint_expiry_secs=float(
            root.get("checkpoint_expiry_secs", DEFAULT_CHECKPOINT_EXPIRY_SECS)
        ),
    )


def _console(
    root: Mapping[str, Any], env: Mapping[str, str], problems: Problems
) -> ConsoleConfig | None:
    """The ``console`` section; a console without a token must listen on loopback."""
    raw = root.get("console")
    if not isinstance(raw, Mapping):
        return None
    resolved = resolve_secrets(dict(raw), ("console",), env, problems)
    console = ConsoleConfig.from_config(resolved)
    if console is None or console.token is not None or "token" in raw:
        return console
    metrics = MetricsConfig.from_config(root.get("metrics")) or MetricsConfig()
    if not is_loopback(metrics.listen_address):
        problems.add(
            ("console", "token"),
            f"required: the ops port listens on {metrics.listen_address}, not loopback",
        )
    return console


def _notifier(
    item: Mapping[str, Any],
    at: tuple[PathPart, ...],
    *,
    registry: NotifierRegistry,
    env: Mapping[str, str],
    bad: set[tuple[PathPart, ...]],
    problems: Problems,
) -> NotifierConfig:
    """Resolve the secrets of one notifier entry (its failed values left out) and run
    its type's :meth:`~alert_service.notify.base.Notifier.check_options`."""
    options = {k: v for k, v in item.items() if k not in ("name", "type")}
    before = len(problems.items)
    resolved = resolve_secrets(options, at, env, problems)
    # An unresolved secret is None now: its problem is reported, do not check it again.
    skip = bad | problems.paths_since(before)
    type_name = text(item.get("type"))
    if type_name is not None and type_name in registry.types():
        try:
            found = registry.get(type_name).check_options(resolved)
        except (TypeError, ValueError, KeyError, AttributeError) as err:
            # A check tripped over a malformed value; the schema problems say which.
            if not problems.under(at):
                problems.add(at, f"cannot check the options: {type(err).__name__}: {err}")
            found = []
        for where, message in found:
            if not is_bad((*at, *where), skip):
                problems.add((*at, *where), message)
    name = text(item.get("name")) or ""
    return NotifierConfig(name, type_name or "", MappingProxyType(resolved))


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
    doc = resolve_relative_paths(read_yaml(path), os.path.dirname(os.path.abspath(path)))
    return build_config(doc, path, registry=registry, environ=environ)


def resolve_relative_paths(doc: object, base: str) -> object:
    """Make the file paths of a parsed document absolute against ``base`` (the config
    file's folder), whatever the working directory of the command is.

    Paths resolved: ``state_dir``; ``sources[].path`` and ``sources[].glob``; every
    ``{file: PATH}`` secret and every ``include_files`` list item, wherever they
    appear. Absolute paths, and values that are not text, are left as they are.

    Returns:
        A copy of ``doc`` with those paths absolute (``doc`` itself is not changed).
    """

    def fix(value: object) -> object:
        if isinstance(value, str) and value and not os.path.isabs(value):
            return os.path.normpath(os.path.join(base, value))
        return value

    def walk(value: object) -> object:
        if isinstance(value, Mapping):
            out: dict[Any, Any] = {}
            for key, item in value.items():
                if key == "include_files" and isinstance(item, list):
                    out[key] = [fix(x) for x in item]
                elif key == "file" and len(value) == 1:
                    out[key] = fix(item)
                else:
                    out[key] = walk(item)
            return out
        if isinstance(value, list):
            return [walk(item) for item in value]
        return value

    if not isinstance(doc, Mapping):
        return doc
    root = cast(dict[Any, Any], walk(doc))
    if "state_dir" in root:
        root["state_dir"] = fix(root["state_dir"])
    sources = root.get("sources")
    if isinstance(sources, list):
        for item in sources:
            if isinstance(item, dict):
                for key in ("path", "glob"):
                    if key in item:
                        item[key] = fix(item[key])
    return root
