"""The YAML/JSON blocks of the Markdown docs, each with the form it claims to be.

A fenced block names its form and, for Fleet forms, the Fleet versions it claims in
the fence's info string, after the language (Markdown shows only the language)::

    ```yaml form=fleet-agent-options fleet=4.82+
    ```yaml form=fleet-gitops fleet=4.82+ excerpt
    ```json form=osquery-pack

Every ``yaml``/``yml``/``json`` block must name a form; other blocks may (``text
form=fleetd-flagfile``). :func:`snippet_problems` checks a block as its form.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from alert_service.config import load_config
from alert_service.config.strict import Problems, read_yaml, yaml_problems
from alert_service.errors import ConfigError
from tests.helpers.forms.agent_options import agent_options_problems
from tests.helpers.forms.apply import apply_problems
from tests.helpers.forms.gitops import gitops_problems
from tests.helpers.forms.osquery import (
    config_problems,
    flagfile_problems,
    pack_problems,
    parse_json_strict,
)
from tests.helpers.forms.versions import Span

__all__ = ["FORMS", "Snippet", "extract_snippets", "snippet_problems"]

_FENCE = re.compile(r"^```(\S*)[ \t]*(.*?)\n(.*?)^```[ \t]*$", re.M | re.S)
STRUCTURED = frozenset({"yaml", "yml", "json"})


@dataclass(frozen=True)
class Snippet:
    """One fenced block: where it is, its language, attributes and text."""

    source: Path
    line: int
    language: str
    attrs: dict[str, str] = field(default_factory=dict)
    text: str = ""

    @property
    def where(self) -> str:
        return f"{self.source.name}:{self.line}"

    @property
    def form(self) -> str | None:
        return self.attrs.get("form")

    @property
    def span(self) -> Span | None:
        return Span.parse(self.attrs["fleet"]) if "fleet" in self.attrs else None


def extract_snippets(path: Path) -> list[Snippet]:
    """Every fenced block of the Markdown file ``path``, in order."""
    text = path.read_text(encoding="utf-8")
    out = []
    for match in _FENCE.finditer(text):
        attrs: dict[str, str] = {}
        for word in match[2].split():
            key, _, value = word.partition("=")
            attrs[key] = value or "yes"
        line = text.count("\n", 0, match.start()) + 1
        out.append(Snippet(path, line, match[1].lower(), attrs, match[3]))
    return out


def _yaml(snippet: Snippet) -> Any:
    return yaml.safe_load(snippet.text)


def _agent_options(snippet: Snippet, base: Path) -> list[str]:
    doc = _yaml(snippet)
    if isinstance(doc, dict) and set(doc) == {"agent_options"}:
        doc = doc["agent_options"]
    return agent_options_problems(doc, premium=snippet.attrs.get("premium", "yes") == "yes")


def _apply(snippet: Snippet, base: Path) -> list[str]:
    return apply_problems(snippet.text, _span(snippet))


def _gitops(snippet: Snippet, base: Path) -> list[str]:
    # ``base=DIR`` (relative to the repository): where the block's ``path:`` entries are.
    root = snippet.source.parent.parent / snippet.attrs.get("base", ".")
    return gitops_problems(_yaml(snippet), _span(snippet), root, excerpt="excerpt" in snippet.attrs)


def _pack(snippet: Snippet, base: Path) -> list[str]:
    return pack_problems(parse_json_strict(snippet.text))


def _config(snippet: Snippet, base: Path) -> list[str]:
    return config_problems(parse_json_strict(snippet.text))


def _flagfile(snippet: Snippet, base: Path) -> list[str]:
    return flagfile_problems(snippet.text)


def _fleetd_flagfile(snippet: Snippet, base: Path) -> list[str]:
    return flagfile_problems(snippet.text, fleetd=True)


def _alert_config(snippet: Snippet, base: Path) -> list[str]:
    path = base / f".snippet-{snippet.line}.yaml"
    path.write_text(snippet.text, encoding="utf-8")
    try:
        load_config(str(path), environ=_SECRETS)
    except ConfigError as err:
        return [f"alert service refuses it: {err}"]
    finally:
        path.unlink()
    return []


def _alert_fragment(snippet: Snippet, base: Path) -> list[str]:
    # Read as the service reads a configuration (duplicate keys refused, leading zeros
    # and keys that are not text reported), not with safe_load, which takes them.
    path = base / f".snippet-{snippet.line}.yaml"
    path.write_text(snippet.text, encoding="utf-8")
    try:
        doc = read_yaml(str(path))
    except ConfigError as err:
        return [f"alert service refuses it: {err}"]
    finally:
        path.unlink()
    if not isinstance(doc, (dict, list)):
        return ["expected a YAML mapping or list"]
    problems = Problems(str(path))
    yaml_problems(doc, (), problems)
    try:
        problems.raise_if_any()
    except ConfigError as err:
        return [f"alert service refuses it: {err}"]
    return []


def _output(snippet: Snippet, base: Path) -> list[str]:
    return []


_SECRETS = {
    "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T0/B0/x",
    "FLEET_API_TOKEN": "token",
}

FORMS: dict[str, Callable[[Snippet, Path], list[str]]] = {
    "fleet-agent-options": _agent_options,
    "fleet-apply": _apply,
    "fleet-gitops": _gitops,
    "osquery-pack": _pack,
    "osquery-config": _config,
    "osquery-flagfile": _flagfile,
    "fleetd-flagfile": _fleetd_flagfile,
    "alert-service-config": _alert_config,
    "alert-service-fragment": _alert_fragment,
    "output": _output,
}
"""Form name → checker. ``alert-service-fragment`` blocks are parts of a config that
the docs explain one at a time: they are only parsed; ``output`` is what a command
prints, shown with its elisions, and is not parsed."""

_NEEDS_SPAN = frozenset({"fleet-apply", "fleet-gitops"})


def _span(snippet: Snippet) -> Span:
    span = snippet.span
    if span is None:
        raise ValueError(f"{snippet.where}: form {snippet.form} needs fleet=VERSIONS")
    return span


def snippet_problems(snippet: Snippet, scratch: Path) -> list[str]:
    """Problems of one block; ``scratch``: a directory for files the checks write."""
    if snippet.form is None:
        if snippet.language in STRUCTURED:
            return [f"{snippet.where}: a {snippet.language} block must name its form=..."]
        return []
    check = FORMS.get(snippet.form)
    if check is None:
        return [f"{snippet.where}: unknown form {snippet.form!r}"]
    if snippet.form in _NEEDS_SPAN and snippet.span is None:
        return [f"{snippet.where}: form {snippet.form} must claim fleet=VERSIONS"]
    try:
        problems = check(snippet, scratch)
    except (yaml.YAMLError, ValueError) as err:
        problems = [f"does not parse: {err}"]
    return [f"{snippet.where} ({snippet.form}): {p}" for p in problems]
