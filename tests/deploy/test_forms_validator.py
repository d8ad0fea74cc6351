"""The deployment-form validators (tests/helpers/forms) refuse what the real readers refuse.

Each case feeds a validator a document that osquery, Fleet or fleetctl handles badly,
per the upstream rule named in the validator's docstring, and checks the problem it
reports; the good forms next to them must pass. The old agent_options snippet of
docs/deploy.md (kept in data/) is the case of issue 19.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.forms.agent_options import agent_options_problems
from tests.helpers.forms.apply import apply_problems
from tests.helpers.forms.gitops import gitops_problems, top_level_keys
from tests.helpers.forms.gojson import ListOf, Struct, go_type_problems
from tests.helpers.forms.osquery import config_problems, flagfile_problems, pack_problems
from tests.helpers.forms.snippets import Snippet, extract_snippets, snippet_problems
from tests.helpers.forms.versions import Span, Version, check_versions

REPO = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parent / "data"
FLEET = REPO / "packs" / "fleet"
GITOPS = FLEET / "gitops"


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


# -- agent options ----------------------------------------------------------------------


def test_the_old_agent_options_snippet_is_refused() -> None:
    old = load(DATA / "agent-options.before-issue-19.yml")["agent_options"]
    problems = agent_options_problems(old)
    assert any("the --extensions_autoload flag isn't supported" in p for p in problems), problems
    assert (
        "agent_options.command_line_flags.extensions_timeout: Go wants a string, got a "
        'number (10); quote it: "10"'
    ) in problems
    assert len(problems) == 2, problems


def test_the_fixed_agent_options_pass() -> None:
    fixed = load(GITOPS / "lib" / "agent-options.fleetd-extension.yml")
    assert agent_options_problems(fixed) == []
    assert fixed["command_line_flags"]["extensions_timeout"] == "10"
    assert "extensions_autoload" not in fixed["command_line_flags"]
    # Fleet's default config.options are kept.
    assert fixed["config"]["options"]["pack_delimiter"] == "/"
    assert fixed["config"]["options"]["logger_tls_period"] == 10


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"command_line_flags": {"host_identifier": "uuid"}}, "--host_identifier flag isn't"),
        ({"command_line_flags": {"database_path": "/tmp/x"}}, "--database_path flag isn't"),
        (
            {"command_line_flags": {"extensions_interval": 3}},
            "extensions_interval: Go wants a string",
        ),
        ({"command_line_flags": {"verbose": "true"}}, "verbose: Go wants true or false"),
        ({"command_line_flags": {"no_such_flag": 1}}, 'unknown field "no_such_flag"'),
        ({"command_line_flags": {"watchdog_level": 1.5}}, "whole number (int32)"),
        ({"command_line_flags": {"logger_tls_period": -1}}, "does not fit Go's uint64"),
        ({"config": {"options": {"logger_plugin": "tls"}}}, 'unknown field "logger_plugin"'),
        ({"config": {"options": {"logger_tls_endpoint": "api/log"}}}, "starting with '/'"),
        ({"config": {"decorators": {"load": "SELECT 1"}}}, "decorators.load: expected an array"),
        ({"config": {"schedulee": {}}}, 'unknown field "schedulee"'),
        ({"overrides": {"platforms": {"darwin": None}}}, "cannot be null"),
        ({"overrides": {"platform": {}}}, 'unknown field "platform"'),
        ({"extensions": {"tc": {"channel": "stable", "platform": "ubuntu"}}}, "linux, macos"),
        ({"extensions": {"../tc": {"channel": "stable", "platform": "linux"}}}, "skips names"),
        ({"update_channels": {"orbit": ""}}, "defined but not set"),
        ({"update_channels": None}, "cannot be null"),
        ({"script_execution_timeout": 7200}, "exceeds the limit of 3600"),
        ({"unknown_top": 1}, 'unknown field "unknown_top"'),
    ],
)
def test_agent_options_rules(change: dict[str, Any], needle: str) -> None:
    doc = copy.deepcopy(load(GITOPS / "lib" / "agent-options.fleetd-extension.yml"))
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(doc.get(key), dict):
            doc[key] = {**doc[key], **value}
        else:
            doc[key] = value
    problems = agent_options_problems(doc)
    assert any(needle in p for p in problems), problems


def test_go_keys_match_case_insensitively_and_null_is_no_value() -> None:
    flags = Struct("flags", {"verbose": "bool"})
    assert go_type_problems({"Verbose": True}, flags, "f") == []
    assert go_type_problems({"verbose": None}, flags, "f") == []
    assert go_type_problems([1, "a"], ListOf("uint32"), "l") == [
        "l[1]: Go wants a number (uint32), got a string ('a')"
    ]


def test_premium_only_agent_options() -> None:
    doc = {"extensions": {"tc": {"channel": "s", "platform": "linux", "labels": ["x"]}}}
    assert agent_options_problems(doc) == []
    assert any("needs Fleet Premium" in p for p in agent_options_problems(doc, premium=False))


# -- fleetctl apply ------------------------------------------------------------------


def report(**change: Any) -> str:
    spec = {**load(FLEET / "tracked_connections.report.yml")["spec"], **change}
    return yaml.safe_dump({"apiVersion": "v1", "kind": "report", "spec": spec})


def test_kind_report_needs_fleetctl_4_82() -> None:
    assert apply_problems(report(), Span.parse("4.82+")) == []
    problems = apply_problems(report(), Span.parse("4.81+"))
    assert any("fleetctl 4.81 refuses it (unknown kind)" in p for p in problems), problems


def test_kind_query_is_deprecated_from_4_82() -> None:
    text = (FLEET / "tracked_connections.query.yml").read_text(encoding="utf-8")
    assert apply_problems(text, Span.parse("4.39-4.81")) == []
    assert any("deprecated from Fleet 4.82" in p for p in apply_problems(text, Span.parse("4.82+")))


def test_keys_an_older_fleetctl_ignores_are_named() -> None:
    text = (FLEET / "tracked_connections.query.yml").read_text(encoding="utf-8")
    problems = apply_problems(text, Span.parse("4.34-4.81"))
    assert any(
        "Fleet 4.34 ignores the key 'interval' (read from Fleet 4.35 on)" in p for p in problems
    ), problems
    assert any("Fleet 4.35 ignores the key 'discard_data'" in p for p in problems), problems
    scoped = (FLEET / "tracked_connections.query.label-scoped.yml").read_text(encoding="utf-8")
    assert any(
        "ignores the key 'labels_include_any' (read from Fleet 4.66 on)" in p
        for p in apply_problems(scoped, Span.parse("4.60-4.81"))
    )
    assert any(
        "needs Fleet Premium" in p
        for p in apply_problems(scoped, Span.parse("4.66-4.81"), premium=False)
    )


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"logging": "diff"}, "logging 'diff' is not one of"),
        ({"platform": "linux,beos"}, "platform 'linux,beos'"),
        ({"interval": "2"}, "interval: Go wants a number (uint)"),
        ({"interval": 700000}, "osquery drops it"),
        ({"query": ""}, "query must not be empty"),
        ({"automations_enabled": "yes"}, "automations_enabled: Go wants true or false"),
        ({"labels_includ_any": ["x"]}, "ignores the key 'labels_includ_any'"),
    ],
)
def test_query_spec_rules(change: dict[str, Any], needle: str) -> None:
    problems = apply_problems(report(**change), Span.parse("4.82+"))
    assert any(needle in p for p in problems), problems


def test_a_query_cannot_name_a_label_its_own_file_creates() -> None:
    label = (FLEET / "tracked_connections.label.yml").read_text(encoding="utf-8")
    scoped = (FLEET / "tracked_connections.report.label-scoped.yml").read_text(encoding="utf-8")
    assert apply_problems(scoped, Span.parse("4.82+")) == []
    problems = apply_problems(label + "\n---\n" + scoped, Span.parse("4.82+"))
    assert any("fleetctl applies queries before labels" in p for p in problems), problems


def test_pack_and_label_rules() -> None:
    shipped = (FLEET / "tracked_connections.pack.yml").read_text(encoding="utf-8")
    assert apply_problems(shipped, Span.parse("4.35+"), deprecated_ok=True) == []
    assert any("deprecated" in p for p in apply_problems(shipped, Span.parse("4.35+")))
    bad = """
apiVersion: v1
kind: pack
spec:
  name: p
  targets: {labels: [x], hosts: [y]}
  queries:
    - {query: q, name: q, interval: 0}
---
apiVersion: v1
kind: label
spec: {name: l}
---
apiVersion: v1
kind: lable
spec: {name: l}
---
apiVersion: v1
kind: label
"""
    problems = apply_problems(bad, Span.parse("4.82+"))
    assert any('unknown field "hosts"' in p for p in problems), problems
    assert any("interval must be 1 to 604800" in p for p in problems), problems
    assert any("a dynamic label needs a query" in p for p in problems), problems
    assert any("not a kind this validator knows" in p for p in problems), problems
    assert any('missing required field "spec"' in p for p in problems), problems


# -- GitOps -------------------------------------------------------------------------


def test_gitops_top_level_keys_per_version() -> None:
    assert "reports" not in top_level_keys(Version(4, 81))
    assert {"reports", "queries", "settings", "team_settings"} <= top_level_keys(Version(4, 82))
    assert "labels" in top_level_keys(Version(4, 66))
    assert "labels" not in top_level_keys(Version(4, 65))


def test_gitops_reports_key_needs_4_82_and_queries_is_deprecated_there() -> None:
    current = load(GITOPS / "default.yml")
    older = load(GITOPS / "default.pre-4.82.yml")
    assert gitops_problems(current, Span.parse("4.82+"), GITOPS, excerpt=True) == []
    assert gitops_problems(older, Span.parse("4.45-4.81"), GITOPS, excerpt=True) == []
    assert "fleetctl gitops 4.81: unknown top-level field: reports" in gitops_problems(
        current, Span.parse("4.81+"), GITOPS, excerpt=True
    )
    assert "fleetctl gitops 4.82: 'queries' is deprecated; use 'reports'" in gitops_problems(
        older, Span.parse("4.82+"), GITOPS, excerpt=True
    )
    both = {**current, **older}
    assert any(
        "cannot specify both 'queries' (deprecated) and 'reports'" in p
        for p in gitops_problems(both, Span.parse("4.82+"), GITOPS, excerpt=True)
    )
    assert any(
        "no gitops command before 4.45" in p
        for p in gitops_problems(older, Span.parse("4.40-4.81"), GITOPS, excerpt=True)
    )


def test_gitops_items(tmp_path: Path) -> None:
    (tmp_path / "nested.yml").write_text("- path: ./other.yml\n", encoding="utf-8")
    doc = {
        "reports": [
            {"path": "./nested.yml"},
            {"name": "a", "query": "SELECT 1", "team": "x"},
            {"name": "a", "query": "SELECT 2"},
            {"name": "é", "query": "SELECT 3"},
            {"path": "./missing.yml"},
        ]
    }
    problems = gitops_problems(doc, Span.parse("4.82+"), tmp_path, excerpt=True)
    for needle in (
        "nested paths are not supported",
        "'team' is not set in GitOps",
        "duplicate report names: ['a']",
        "name must be ASCII",
        "./missing.yml does not exist",
    ):
        assert any(needle in p for p in problems), (needle, problems)
    full = gitops_problems({"queries": []}, Span.parse("4.70-4.81"), tmp_path, excerpt=False)
    assert "fleetctl gitops 4.70: 'agent_options' is required" in full
    assert "fleetctl gitops 4.70: either 'org_settings' or 'name' is required" in full


# -- osquery ------------------------------------------------------------------------


def test_osquery_pack_rules() -> None:
    pack = {
        "discovery": "SELECT 1",
        "schedule": {},
        "queries": {
            "x_counter": {"query": "SELECT 1", "interval": 2},
            "query.y": {"query": "SELECT 1", "interval": 0},
            "z": {"interval": 2, "snapshot": "no", "removd": True},
        },
    }
    problems = pack_problems(pack)
    for needle in (
        "osquery ignores the key 'schedule'",
        "discovery must be a list",
        "ends in epoch/counter",
        "starts with a prefix osquery reserves",
        "interval 0 outside",
        "no query string",
        "snapshot should be true or false",
        "osquery ignores the key 'removd'",
    ):
        assert any(needle in p for p in problems), (needle, problems)
    assert config_problems({"packs": {"p": "relative/p.conf"}}) == [
        "osquery.conf: pack 'p': use an absolute path"
    ]


def test_flagfile_rules() -> None:
    text = "--extensions_timeout=ten\n--made_up=1\nextensions_require\n--host_identifier=uuid\n"
    problems = flagfile_problems(text, fleetd=True)
    for needle in (
        "--extensions_timeout=ten: expected whole seconds",
        "--made_up: not a flag this project checked",
        "not a --flag=value line",
        "--host_identifier: fleetd sets it after the flagfile",
    ):
        assert any(needle in p for p in problems), (needle, problems)


# -- snippets and versions ------------------------------------------------------------


def test_snippets_carry_their_form_and_span(tmp_path: Path) -> None:
    doc = tmp_path / "docs" / "x.md"
    doc.parent.mkdir()
    old = (DATA / "agent-options.before-issue-19.yml").read_text(encoding="utf-8")
    doc.write_text(
        "Intro.\n\n```yaml form=fleet-agent-options\n" + old + "```\n\n"
        '```yaml\nkey: value\n```\n\n```json form=osquery-pack\n{"queries": {}}\n```\n'
        "```yaml form=fleet-apply\nkind: report\nspec: {}\n```\n",
        encoding="utf-8",
    )
    snippets = extract_snippets(doc)
    assert [(s.line, s.form) for s in snippets] == [
        (3, "fleet-agent-options"),
        (20, None),
        (24, "osquery-pack"),
        (27, "fleet-apply"),
    ]
    problems = [p for s in snippets for p in snippet_problems(s, tmp_path)]
    assert any("x.md:3 (fleet-agent-options)" in p and "extensions_autoload" in p for p in problems)
    assert "x.md:20: a yaml block must name its form=..." in problems
    assert any("x.md:24 (osquery-pack)" in p and "non-empty" in p for p in problems)
    assert "x.md:27: form fleet-apply must claim fleet=VERSIONS" in problems
    assert Snippet(doc, 1, "yaml", {"form": "output"}, "{not json").form == "output"


def test_spans_and_boundaries() -> None:
    span = Span.parse("4.35-4.81")
    assert Version(4, 81, 2) in span and Version(4, 82) not in span
    assert str(span) == "4.35-4.81" and str(Span.parse("4.82+")) == "4.82+"
    assert check_versions(span, [Version(4, 39), Version(4, 82), Version(4, 1)]) == [
        Version(4, 35),
        Version(4, 39),
    ]
    with pytest.raises(ValueError):
        Span.parse("4.82")


def test_an_alert_service_fragment_is_read_as_the_service_reads_yaml(tmp_path: Path) -> None:
    # The service refuses a duplicate key (check-config: "found duplicate key"), which
    # PyYAML's safe_load takes silently, keeping the last value: a fragment a user
    # copies into alerts.yaml must not hold one.
    def problems(text: str) -> list[str]:
        snippet = Snippet(tmp_path / "x.md", 7, "yaml", {"form": "alert-service-fragment"}, text)
        return snippet_problems(snippet, tmp_path)

    assert problems("log_level: info\nstate_dir: /a\n") == []
    (problem,) = problems("state_dir: /a\nlog_level: info\nstate_dir: /b\n")
    assert "x.md:7 (alert-service-fragment)" in problem
    assert "found duplicate key 'state_dir'" in problem
    (problem,) = problems("remote_port: [0443]\n")
    assert "leading zero" in problem
    assert list(tmp_path.iterdir()) == []  # no scratch file left behind
