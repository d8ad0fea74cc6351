"""``fleetctl gitops`` files: top-level keys per Fleet version, and report/query lists.

Rules (``GitOpsFromFile``, pkg/spec/gitops.go, and pkg/spec/gitops_deprecations.go):

* Top-level keys other than the version's list are refused ("unknown top-level
  field"). Before 4.82: ``name``, ``team_settings``, ``org_settings``,
  ``agent_options``, ``controls``, ``policies``, ``queries``, then ``software``
  (in the parser by the 4.60 line; not used by this project) and ``labels`` (4.66,
  fleetdm/fleet#26968). From 4.82: ``name``, ``settings``, ``org_settings``,
  ``agent_options``, ``controls``, ``policies``, ``reports``, ``software``,
  ``labels``; ``team_settings`` and ``queries`` are read as deprecated names of
  ``settings`` and ``reports`` (``DeprecatedGitOpsKeyMappings``), and giving both the
  old and the new name is refused ("cannot specify both").
* GitOps states the whole configuration: from 4.82 a top-level key left out is read as
  ``null`` and clears what it holds (reports, policies, agent options...); before
  4.82 leaving ``agent_options`` or ``queries`` out of a file is an error. A file of
  this project that holds only our entries is an *excerpt* to merge into yours.
* Report/query lists (``parseReports``; ``parseQueries`` before 4.82): each item is
  either inline ``QuerySpec`` keys or ``path:`` to a file holding a list of such
  items; a path inside such a file is refused ("nested paths are not supported");
  every item needs a ``name`` (ASCII) and a ``query``; two items with one name are
  refused ("duplicate ... names"); recent ``fleetctl`` also refuses unknown keys in the
  items (``validateRawKeys``), older ones drop them. GitOps sets each item's fleet
  itself (the ``team_id`` option is not supported: Fleet's GitOps reference,
  https://github.com/fleetdm/fleet/blob/main/docs/Configuration/yaml-files.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.helpers.forms.apply import query_spec_problems
from tests.helpers.forms.versions import Span, Version, check_versions

__all__ = ["BOUNDARIES", "gitops_problems", "top_level_keys"]

V4_45, V4_60, V4_66, V4_82 = Version(4, 45), Version(4, 60), Version(4, 66), Version(4, 82)
BOUNDARIES = (V4_60, V4_66, V4_82)
_BEFORE_4_82 = ("name", "team_settings", "org_settings", "agent_options", "controls", "policies")
_FROM_4_82 = ("name", "settings", "org_settings", "agent_options", "controls", "policies")
_RENAMED = {"team_settings": "settings", "queries": "reports"}


def top_level_keys(version: Version) -> set[str]:
    """The top-level keys ``fleetctl gitops`` of ``version`` accepts (aliases included)."""
    if version >= V4_82:
        return {*_FROM_4_82, "reports", "software", "labels", *_RENAMED}
    keys = {*_BEFORE_4_82, "queries"}
    if version >= V4_60:
        keys.add("software")
    if version >= V4_66:
        keys.add("labels")
    return keys


def _list_key(version: Version) -> str:
    return "reports" if version >= V4_82 else "queries"


def _items(
    doc: dict[str, Any], key: str, base: Path, version: Version, where: str
) -> tuple[list[tuple[str, Any]], list[str]]:
    """(place, item) for every report/query item, path-referenced files read."""
    problems: list[str] = []
    raw = doc.get(key)
    if raw is None:
        return [], problems
    if not isinstance(raw, list):
        return [], [f"{where}: {key} must be a list"]
    out: list[tuple[str, Any]] = []
    for i, entry in enumerate(raw):
        place = f"{where}: {key}[{i}]"
        if isinstance(entry, dict) and "path" in entry:
            if set(entry) != {"path"}:
                problems.append(f"{place}: a path item has only 'path'")
            target = (base / str(entry["path"])).resolve()
            if not target.is_file():
                problems.append(f"{place}: {entry['path']} does not exist")
                continue
            try:
                listing = yaml.safe_load(target.read_text(encoding="utf-8"))
            except yaml.YAMLError as err:
                problems.append(f"{place}: {target.name} is not YAML: {err}")
                continue
            if not isinstance(listing, list):
                problems.append(f"{place}: {target.name} must hold a list")
                continue
            for j, item in enumerate(listing):
                inner = f"{place} → {target.name}[{j}]"
                if isinstance(item, dict) and "path" in item:
                    problems.append(f"{inner}: nested paths are not supported")
                    continue
                out.append((inner, item))
        else:
            out.append((place, entry))
    return out, problems


def gitops_problems(
    doc: Any, span: Span, base: Path, *, excerpt: bool, premium: bool = True
) -> list[str]:
    """Problems of a GitOps file (``doc`` decoded) for every version of ``span``.

    Args:
        doc: the file's mapping.
        span: the Fleet versions it claims.
        base: the directory relative ``path:`` entries are resolved against.
        excerpt: the file holds only entries to merge into a full ``default.yml`` or
            fleet file, so the keys a full file needs are not required.
        premium: the server has Fleet Premium (``labels_include_any``).
    """
    if not isinstance(doc, dict):
        return ["a GitOps file is a mapping"]
    problems: list[str] = []
    for version in check_versions(span, (V4_45, *BOUNDARIES)):
        where = f"fleetctl gitops {version}"
        if version < V4_45:
            problems.append(f"{where}: fleetctl has no gitops command before 4.45")
            continue
        allowed = top_level_keys(version)
        for key in doc:
            if key not in allowed:
                problems.append(f"{where}: unknown top-level field: {key}")
        if version >= V4_82:
            for old, new in _RENAMED.items():
                if old in doc and new in doc:
                    problems.append(
                        f"{where}: cannot specify both '{old}' (deprecated) and '{new}'"
                    )
                elif old in doc:
                    problems.append(f"{where}: '{old}' is deprecated; use '{new}'")
        if not excerpt:
            if "org_settings" not in doc and "name" not in doc:
                problems.append(f"{where}: either 'org_settings' or 'name' is required")
            if version < V4_82 and "agent_options" not in doc:
                problems.append(f"{where}: 'agent_options' is required")
        key = _list_key(version)
        other = "queries" if key == "reports" else "reports"
        items, found = _items(doc, key if key in doc else other, base, version, where)
        problems += found
        names: list[str] = []
        for place, item in items:
            problems += query_spec_problems(item, version, place, premium=premium, gitops=True)
            if isinstance(item, dict):
                name = str(item.get("name") or "")
                if not name.isascii():
                    problems.append(f"{place}: name must be ASCII")
                names.append(name)
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            problems.append(f"{where}: duplicate report names: {duplicates}")
    return list(dict.fromkeys(problems))
