"""``fleetctl apply -f FILE`` documents: kinds and spec keys per Fleet version.

``fleetctl`` splits the file on ``---`` lines and reads each document's ``kind`` and
``spec`` (``GroupFromBytes``, pkg/spec/spec.go): the kind is compared in lower case,
``apiVersion`` is not checked, a document without ``spec`` is refused, an unknown kind
is refused ("unknown kind"). Specs are decoded with ``ghodss/yaml`` without the strict
flag, so a key the running ``fleetctl`` does not know is dropped without a word: this
validator refuses it instead, naming the version that would ignore it.

Kinds (versions from fleetdm/fleet's CHANGELOG and the ``GroupFromBytes`` of each line):

* ``query`` — 4.0 on; from 4.82 a deprecated alias of ``report`` (``fleetctl`` prints
  ``[!] `kind: query` is deprecated, please use `kind: report` instead.``);
* ``report`` — 4.82 on (4.82.0 renamed queries to reports; parsed by ``fleetctl``, so
  the ``fleetctl`` version decides);
* ``pack``, ``label``, ``config``, ``enroll_secret`` — 4.0 on;
* ``team`` (4.1.0 on; deprecated alias of ``fleet`` from 4.82) and ``user_roles``
  (4.1.0 on).

Query/report spec keys (``QuerySpec``, server/fleet/queries.go): ``name``,
``description``, ``query``, ``team`` (``fleet`` from 4.82) and ``observer_can_run`` on
every version; the scheduling keys ``interval``, ``platform``, ``min_osquery_version``,
``automations_enabled`` and ``logging`` from 4.35.0 ("Combined the query and schedule
features"); ``discard_data`` from 4.39.0; ``labels_include_any`` from 4.66.0 (Fleet
Premium; fleetdm/fleet#16413, #26830). Checked values (``Query.Verify``): a name and a
query, ``logging`` one of ``snapshot``, ``differential``,
``differential_ignore_removals``, ``platform`` a comma-separated list of ``darwin``,
``linux``, ``windows``, ``chrome``. osquery drops a scheduled query whose interval is
above 604800 s (``Pack::initialize``).

Pack specs (``PackSpec``, server/fleet/packs.go): ``id``, ``name``, ``description``,
``platform``, ``disabled``, ``targets`` (``labels``, ``teams``) and ``queries`` whose
entries have ``query`` (the saved query's name), ``name``, ``description``,
``interval`` (1 to 604800, ``PackSpec.Verify``), ``snapshot``, ``removed``, ``shard``,
``platform``, ``version``, ``denylist``.

Label specs (``LabelSpec``): ``name``, ``description``, ``query``, ``platform``,
``label_membership_type``, ``hosts``.

Order (``Client.ApplyGroup``, server/service/client.go): queries are applied before
labels, and packs after both. A query that names, in ``labels_include_any``, a label
created by the same file therefore fails on the first run: apply the label first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from tests.helpers.forms.gojson import GoType, ListOf, Struct, go_type_problems
from tests.helpers.forms.versions import Span, Version, check_versions

__all__ = ["BOUNDARIES", "ApplyDoc", "apply_docs", "apply_problems", "query_spec_keys"]

V4_0, V4_1, V4_35, V4_39, V4_66, V4_82 = (
    Version(4, 0),
    Version(4, 1),
    Version(4, 35),
    Version(4, 39),
    Version(4, 66),
    Version(4, 82),
)
BOUNDARIES = (V4_1, V4_35, V4_39, V4_66, V4_82)

# kind → (since, deprecated from or None)
_KINDS: dict[str, tuple[Version, Version | None]] = {
    "query": (V4_0, V4_82),
    "report": (V4_82, None),
    "pack": (V4_0, None),
    "label": (V4_0, None),
    "config": (V4_0, None),
    "enroll_secret": (V4_0, None),
    "team": (V4_1, V4_82),
    "fleet": (V4_82, None),
    "user_roles": (V4_1, None),
}

# QuerySpec keys → (Go type, since)
_QUERY_KEYS: dict[str, tuple[GoType, Version]] = {
    "name": ("string", V4_0),
    "description": ("string", V4_0),
    "query": ("string", V4_0),
    "team": ("string", V4_0),
    "fleet": ("string", V4_82),
    "observer_can_run": ("bool", V4_0),
    "interval": ("uint", V4_35),
    "platform": ("string", V4_35),
    "min_osquery_version": ("string", V4_35),
    "automations_enabled": ("bool", V4_35),
    "logging": ("string", V4_35),
    "discard_data": ("bool", V4_39),
    "labels_include_any": (ListOf("string"), V4_66),
}
PREMIUM_QUERY_KEYS = frozenset({"labels_include_any"})
_LOGGING = ("snapshot", "differential", "differential_ignore_removals")
_PLATFORMS = ("darwin", "linux", "windows", "chrome")
MAX_INTERVAL_SECS = 604800
_PACK_QUERY = Struct(
    "PackSpecQuery",
    {
        "query": "string",
        "name": "string",
        "description": "string",
        "interval": "uint",
        "snapshot": "bool",
        "removed": "bool",
        "shard": "uint",
        "platform": "string",
        "version": "string",
        "denylist": "bool",
    },
)
_PACK = Struct(
    "PackSpec",
    {
        "id": "uint",
        "name": "string",
        "description": "string",
        "platform": "string",
        "disabled": "bool",
        "targets": Struct(
            "PackSpecTargets", {"labels": ListOf("string"), "teams": ListOf("string")}
        ),
        "queries": ListOf(_PACK_QUERY),
    },
)
_LABEL = Struct(
    "LabelSpec",
    {
        "name": "string",
        "description": "string",
        "query": "string",
        "platform": "string",
        "label_membership_type": "string",
        "hosts": ListOf("string"),
    },
)


@dataclass(frozen=True)
class ApplyDoc:
    """One ``---`` document of an apply file: its kind (lower case) and spec."""

    index: int
    kind: str
    spec: Any


def apply_docs(text: str) -> tuple[list[ApplyDoc], list[str]]:
    """Split and decode an apply file as ``GroupFromBytes`` does."""
    docs: list[ApplyDoc] = []
    problems: list[str] = []
    try:
        loaded = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as err:
        return [], [f"not YAML: {err}"]
    for i, doc in enumerate(loaded):
        if not isinstance(doc, dict):
            problems.append(f"document {i}: not a mapping")
            continue
        if doc.get("spec") is None:
            problems.append(f'document {i}: missing required field "spec"')
            continue
        docs.append(ApplyDoc(i, str(doc.get("kind", "")).lower(), doc["spec"]))
    return docs, problems


def query_spec_keys(version: Version) -> dict[str, GoType]:
    """The query/report spec keys ``fleetctl`` ``version`` reads, with their Go types."""
    return {k: t for k, (t, since) in _QUERY_KEYS.items() if version >= since}


def query_spec_problems(
    spec: Any, version: Version, where: str, *, premium: bool = True, gitops: bool = False
) -> list[str]:
    """Problems of one query/report spec (an apply spec or a GitOps item) at ``version``."""
    if not isinstance(spec, dict):
        return [f"{where}: expected a mapping"]
    keys = query_spec_keys(version)
    problems = []
    for key in spec:
        if key not in keys:
            known = _QUERY_KEYS.get(key)
            later = f" (read from Fleet {known[1]} on)" if known else ""
            problems.append(f"{where}: Fleet {version} ignores the key {key!r}{later}")
        elif key in PREMIUM_QUERY_KEYS and not premium:
            problems.append(f"{where}: {key!r} needs Fleet Premium")
        elif gitops and key in ("team", "fleet"):
            problems.append(f"{where}: {key!r} is not set in GitOps; the file's fleet decides")
    problems += go_type_problems(spec, Struct("QuerySpec", keys, strict=False), where)
    for key in ("name", "query"):
        if not str(spec.get(key) or "").strip():
            problems.append(f"{where}: {key} must not be empty")
    logging = spec.get("logging")
    if logging is not None and logging not in _LOGGING:
        problems.append(f"{where}: logging {logging!r} is not one of {', '.join(_LOGGING)}")
    platform = spec.get("platform")
    if isinstance(platform, str) and platform.strip():
        bad = [p for p in platform.split(",") if p.strip() not in _PLATFORMS]
        if bad:
            problems.append(f"{where}: platform {platform!r}: {bad} not among {_PLATFORMS}")
    interval = spec.get("interval")
    if isinstance(interval, int) and interval > MAX_INTERVAL_SECS:
        problems.append(f"{where}: interval {interval} > {MAX_INTERVAL_SECS}; osquery drops it")
    return problems


def _pack_problems(spec: Any, where: str) -> list[str]:
    problems = go_type_problems(spec, _PACK, where)
    if not isinstance(spec, dict):
        return problems
    if not str(spec.get("name") or "").strip():
        problems.append(f"{where}: pack name cannot be empty")
    for i, entry in enumerate(spec.get("queries") or []):
        interval = entry.get("interval") if isinstance(entry, dict) else None
        if not isinstance(interval, int) or not 1 <= interval <= MAX_INTERVAL_SECS:
            problems.append(
                f"{where}.queries[{i}]: interval must be 1 to {MAX_INTERVAL_SECS} (PackSpec.Verify)"
            )
    return problems


def _label_problems(spec: Any, where: str) -> list[str]:
    problems = go_type_problems(spec, _LABEL, where)
    if isinstance(spec, dict):
        if not str(spec.get("name") or "").strip():
            problems.append(f"{where}: label name cannot be empty")
        manual = spec.get("label_membership_type") == "manual"
        if not manual and not str(spec.get("query") or "").strip():
            problems.append(f"{where}: a dynamic label needs a query")
    return problems


def apply_problems(
    text: str, span: Span, *, premium: bool = True, deprecated_ok: bool = False
) -> list[str]:
    """Problems of an apply file at every Fleet version of ``span`` where rules change.

    Args:
        text: the file.
        span: the Fleet versions the file claims.
        premium: the server has Fleet Premium.
        deprecated_ok: a deprecated kind (applied with a warning) is not a problem.
    """
    docs, problems = apply_docs(text)
    if not docs and not problems:
        problems.append("no document")
    for version in check_versions(span, BOUNDARIES):
        labels_here = {
            d.spec.get("name") for d in docs if d.kind == "label" and isinstance(d.spec, dict)
        }
        for doc in docs:
            where = f"Fleet {version}: document {doc.index} (kind {doc.kind})"
            known = _KINDS.get(doc.kind)
            if known is None:
                problems.append(f"{where}: not a kind this validator knows")
                continue
            since, deprecated = known
            if version < since:
                problems.append(f"{where}: fleetctl {version} refuses it (unknown kind)")
                continue
            if deprecated is not None and version >= deprecated and not deprecated_ok:
                problems.append(f"{where}: deprecated from Fleet {deprecated}")
            if doc.kind in ("query", "report"):
                problems += query_spec_problems(doc.spec, version, where, premium=premium)
                scoped = doc.spec.get("labels_include_any") if isinstance(doc.spec, dict) else None
                for label in scoped or []:
                    if label in labels_here:
                        problems.append(
                            f"{where}: labels_include_any names {label!r}, created by this "
                            "file, but fleetctl applies queries before labels: apply the label "
                            "first, from its own file"
                        )
            elif doc.kind == "pack":
                problems += _pack_problems(doc.spec, where)
            elif doc.kind == "label":
                problems += _label_problems(doc.spec, where)
    return list(dict.fromkeys(problems))
