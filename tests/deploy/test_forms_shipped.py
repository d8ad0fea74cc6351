"""Every deployment file and every documented snippet passes the validator of its form,
for the Fleet versions it claims; the forms cannot undo each other; the shipped rules
see only the pack's rows.

* :data:`CLAIMS` names the form and the Fleet versions of every file under packs/ and
  deploy/; a file that is not listed fails the test, so a new file must be claimed.
* docs/deploy.md's "Supported versions" table must say the same versions.
* Every YAML/JSON block of the Markdown docs names its form (tests/helpers/forms/
  snippets.py) and passes it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from alert_service.config import build_config, load_config
from extension.install import DEFAULT_DIR, DEFAULT_NAME, autoload_lines
from tests.helpers.forms.agent_options import agent_options_problems
from tests.helpers.forms.apply import apply_docs, apply_problems
from tests.helpers.forms.gitops import gitops_problems
from tests.helpers.forms.osquery import (
    config_problems,
    flagfile_problems,
    pack_problems,
    parse_json_strict,
)
from tests.helpers.forms.snippets import extract_snippets, snippet_problems
from tests.helpers.forms.versions import Span

REPO = Path(__file__).resolve().parents[2]
DOCS = [*sorted((REPO / "docs").glob("*.md")), REPO / "README.md"]
SECRETS_ENV = {
    "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T0/B0/x",
    "FLEET_API_TOKEN": "token",
}
PACK_QUERY = "tracked_connections"


@dataclass(frozen=True)
class Claim:
    """The form of a file and the Fleet versions it is valid for (None: not Fleet)."""

    form: str
    fleet: str | None = None
    premium: bool = False
    deprecated_ok: bool = False


CLAIMS: dict[str, Claim] = {
    "packs/tracked_connections.conf": Claim("osquery-pack"),
    "packs/fleet/tracked_connections.label.yml": Claim("fleet-apply", "4.35+"),
    "packs/fleet/tracked_connections.report.yml": Claim("fleet-apply", "4.82+"),
    "packs/fleet/tracked_connections.report.label-scoped.yml": Claim(
        "fleet-apply", "4.82+", premium=True
    ),
    "packs/fleet/tracked_connections.query.yml": Claim("fleet-apply", "4.39-4.81"),
    "packs/fleet/tracked_connections.query.label-scoped.yml": Claim(
        "fleet-apply", "4.66-4.81", premium=True
    ),
    "packs/fleet/tracked_connections.pack.yml": Claim("fleet-apply", "4.35+", deprecated_ok=True),
    "packs/fleet/gitops/default.yml": Claim("fleet-gitops-excerpt", "4.82+"),
    "packs/fleet/gitops/default.pre-4.82.yml": Claim("fleet-gitops-excerpt", "4.45-4.81"),
    "packs/fleet/gitops/lib/tracked-connections.reports.yml": Claim("fleet-gitops-list", "4.45+"),
    "packs/fleet/gitops/lib/tracked-connections.label-scoped.reports.yml": Claim(
        "fleet-gitops-list", "4.66+", premium=True
    ),
    "packs/fleet/gitops/lib/agent-options.fleetd-extension.yml": Claim(
        "fleet-agent-options", "4.38+", premium=True
    ),
    "deploy/osquery.flags": Claim("osquery-flagfile"),
    "deploy/fleetd.flags": Claim("fleetd-flagfile"),
    "deploy/osquery.conf": Claim("osquery-config"),
    "deploy/extensions.load": Claim("extensions-load"),
    "deploy/alerts.yaml": Claim("alert-service-config"),
    "deploy/tracked-connections-alerts.service": Claim("systemd-unit"),
}


def deployment_files() -> list[str]:
    found = []
    for top in ("packs", "deploy"):
        for path in (REPO / top).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                found.append(str(path.relative_to(REPO)))
    return sorted(found)


def _gitops_list_problems(path: Path, claim: Claim) -> list[str]:
    """A lib/ list, read as ``queries:`` names it before 4.82 and ``reports:`` from 4.82."""
    span = Span.parse(str(claim.fleet))
    renamed = Span.parse("4.82+").low
    parts = []
    if span.low < renamed:
        parts.append(("queries", Span(span.low, min(span.high or renamed, renamed))))
    if span.high is None or span.high > renamed:
        parts.append(("reports", Span(max(span.low, renamed), span.high)))
    problems = []
    for key, part in parts:
        doc = {key: [{"path": f"./{path.name}"}]}
        problems += gitops_problems(doc, part, path.parent, excerpt=True, premium=claim.premium)
    return problems


def file_problems(relative: str) -> list[str]:
    claim = CLAIMS[relative]
    path = REPO / relative
    text = path.read_text(encoding="utf-8")
    span = Span.parse(claim.fleet) if claim.fleet else None
    match claim.form:
        case "osquery-pack":
            return pack_problems(parse_json_strict(text))
        case "osquery-config":
            return config_problems(parse_json_strict(text))
        case "osquery-flagfile":
            return flagfile_problems(text)
        case "fleetd-flagfile":
            return flagfile_problems(text, fleetd=True)
        case "fleet-apply":
            assert span is not None
            return apply_problems(
                text, span, premium=claim.premium, deprecated_ok=claim.deprecated_ok
            )
        case "fleet-gitops-excerpt":
            assert span is not None
            return gitops_problems(
                yaml.safe_load(text), span, path.parent, excerpt=True, premium=claim.premium
            )
        case "fleet-gitops-list":
            return _gitops_list_problems(path, claim)
        case "fleet-agent-options":
            return agent_options_problems(yaml.safe_load(text), premium=claim.premium)
        case "extensions-load":
            listed = autoload_lines(text)
            return [] if listed == [f"{DEFAULT_DIR}/{DEFAULT_NAME}"] else [f"lists {listed}"]
        case "alert-service-config":
            load_config(str(path), environ=SECRETS_ENV)  # raises ConfigError with every problem
            return []
        case "systemd-unit":
            return []  # test_deploy_files.py: systemd-analyze verify and the hardening keys
    return [f"unknown form {claim.form}"]


def test_every_deployment_file_is_claimed() -> None:
    assert deployment_files() == sorted(CLAIMS)


@pytest.mark.parametrize("relative", sorted(CLAIMS))
def test_deployment_file_passes_its_validator(relative: str) -> None:
    assert file_problems(relative) == []


SNIPPETS = [s for doc in DOCS for s in extract_snippets(doc)]


@pytest.mark.parametrize(
    "snippet",
    [s for s in SNIPPETS if s.form or s.language in {"yaml", "yml", "json"}],
    ids=lambda s: s.where,
)
def test_documented_snippet_passes_its_validator(snippet: Any, tmp_path: Path) -> None:
    assert snippet_problems(snippet, tmp_path) == []


def test_deploy_md_documents_the_fleet_forms_it_claims() -> None:
    forms = {s.form for s in SNIPPETS if s.source.name == "deploy.md"}
    assert {"fleet-agent-options", "fleet-gitops", "fleetd-flagfile"} <= forms


# -- the supported-versions table --------------------------------------------------


def versions_table() -> dict[str, str]:
    text = (REPO / "docs" / "deploy.md").read_text(encoding="utf-8")
    section = text.split("## Supported versions", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = cells[1].replace("Fleet ", "").replace(" ", "")
    return rows


def test_supported_versions_table_says_what_the_files_claim() -> None:
    table = versions_table()
    fleet_claims = {p: c.fleet for p, c in CLAIMS.items() if c.fleet}
    assert {p: table.get(p) for p in fleet_claims} == fleet_claims


# -- the forms cannot undo each other ----------------------------------------------


SCHEDULE_KEYS = (
    "query",
    "interval",
    "logging",
    "automations_enabled",
    "discard_data",
    "observer_can_run",
    "platform",
    "min_osquery_version",
)


def fleet_definitions() -> dict[tuple[str, str], list[tuple[str, dict[str, Any]]]]:
    """(kind class, name) → [(file, spec)] for every query/report and label we ship."""
    found: dict[tuple[str, str], list[tuple[str, dict[str, Any]]]] = {}
    for relative, claim in CLAIMS.items():
        path = REPO / relative
        if claim.form == "fleet-apply":
            docs, _ = apply_docs(path.read_text(encoding="utf-8"))
            for doc in docs:
                cls = "query" if doc.kind in ("query", "report") else doc.kind
                found.setdefault((cls, doc.spec["name"]), []).append((relative, doc.spec))
        elif claim.form == "fleet-gitops-list":
            for item in yaml.safe_load(path.read_text(encoding="utf-8")):
                found.setdefault(("query", item["name"]), []).append((relative, item))
    return found


def test_every_definition_of_a_name_schedules_it_alike() -> None:
    definitions = fleet_definitions()
    reports = definitions[("query", PACK_QUERY)]
    assert len(reports) >= 6
    for (cls, name), specs in definitions.items():
        first_file, first = specs[0]
        for other_file, spec in specs[1:]:
            if cls == "query":
                keys = SCHEDULE_KEYS
                got = {k: " ".join(str(spec.get(k)).split()) for k in keys}
                want = {k: " ".join(str(first.get(k)).split()) for k in keys}
            else:
                got, want = spec, first
            assert got == want, f"{name}: {other_file} differs from {first_file}"
    for _, spec in reports:
        assert spec["interval"] == 2 and spec["automations_enabled"] is True


def test_the_legacy_pack_cannot_unschedule_the_report() -> None:
    docs, _ = apply_docs(
        (REPO / "packs/fleet/tracked_connections.pack.yml").read_text(encoding="utf-8")
    )
    saved = [d.spec for d in docs if d.kind == "query"]
    pack = next(d.spec for d in docs if d.kind == "pack")
    assert [s["name"] for s in saved] == ["tracked_connections_for_pack"]
    assert saved[0]["interval"] == 0
    assert pack["queries"][0]["query"] == "tracked_connections_for_pack"
    assert pack["queries"][0]["name"] == PACK_QUERY  # results: pack/tracked_connections/...


# -- shipped rules see only the pack's rows ----------------------------------------

RULE_CONFIGS = [
    "deploy/alerts.yaml",
    "examples/alerts.example.yaml",
    "examples/demo-alerts.yaml",
    "examples/detections.yaml",
]


@pytest.mark.parametrize("relative", RULE_CONFIGS)
def test_every_shipped_rule_sees_only_the_pack_query(relative: str) -> None:
    """Through the top-level ``queries`` (default the pack's query) or its own."""
    doc = yaml.safe_load((REPO / relative).read_text(encoding="utf-8"))
    doc.pop("state_dir", None)
    env = {**SECRETS_ENV, "SOC_WEBHOOK_URL": "https://soc.example/h", "SOC_WEBHOOK_AUTH": "x"}
    config = build_config(doc, relative, environ=env)
    assert config.queries == (PACK_QUERY,)
    for rule in config.rules:
        assert rule.queries == (PACK_QUERY,), rule.name


def result_line(name: str, columns: dict[str, str], pid: int) -> str:
    return json.dumps(
        {
            "name": name,
            "hostIdentifier": "web-01",
            "calendarTime": "Mon Jan  1 00:00:00 2024 UTC",
            "unixTime": 1704067200,
            "epoch": 0,
            "counter": 1,
            "numerics": False,
            "columns": {**columns, "pid": str(pid)},
            "action": "added",
        }
    )


def replay(config: dict[str, Any], lines: list[str], tmp_path: Path) -> tuple[list[Any], str]:
    log = tmp_path / "osquery_result"
    log.write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = {**config, "sources": [{"path": str(log), "start_at": "beginning"}]}
    config.pop("state_dir", None)
    config_path = tmp_path / "alerts.yaml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "alert_service", "replay", "--config", str(config_path), str(log)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **SECRETS_ENV},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()], done.stderr


REVERSE_SHELL = {
    "family": "2",
    "protocol": "6",
    "remote_address": "203.0.113.5",
    "remote_port": "4444",
    "direction": "outbound",
    "name": "bash",
}


def test_a_shipped_rule_never_fires_on_another_querys_row(tmp_path: Path) -> None:
    """A Fleet log carries every query with automations: only the pack's rows alert."""
    config = yaml.safe_load((REPO / "deploy/alerts.yaml").read_text(encoding="utf-8"))
    names = [
        "pack/Global/open_sockets",  # another Fleet query with the same columns
        "pack_other_pack_tracked_connections_x",  # another osquery pack
        "pack/Global/tracked_connections",  # the report
        "pack/team-3/tracked_connections",
        "pack/tracked_connections/tracked_connections",  # the legacy Fleet pack
        "pack_tracked_connections_tracked_connections",  # plain osquery
    ]
    lines = [result_line(name, REVERSE_SHELL, 100 + i) for i, name in enumerate(names)]
    alerts, _ = replay(config, lines, tmp_path)
    assert {a["query"] for a in alerts} == set(names[2:])
    fired = {a["query"] for a in alerts if a["rule"] == "reverse-shell-ports"}
    assert fired == set(names[2:])


def test_another_querys_row_is_never_a_parse_error(tmp_path: Path) -> None:
    config = yaml.safe_load((REPO / "deploy/alerts.yaml").read_text(encoding="utf-8"))
    other = {**REVERSE_SHELL, "family": "AF_INET", "remote_port": "https"}
    lines = [
        result_line("pack/Global/other_sockets", other, 10),
        result_line("pack/Global/tracked_connections", REVERSE_SHELL, 11),
    ]
    alerts, stderr = replay(config, lines, tmp_path)
    # Two shipped rules fire on the pack's row (reverse-shell-ports, shell-egress: bash
    # to a public address); none on the other query's.
    assert {a["query"] for a in alerts} == {"pack/Global/tracked_connections"}
    assert sorted(a["rule"] for a in alerts) == ["reverse-shell-ports", "shell-egress"]
    finished = [json.loads(x) for x in stderr.splitlines() if '"replay_finished"' in x]
    assert finished and finished[-1]["parse_errors"] == 0, stderr
