"""Configuration: schema, every error with its JSON path, defaults, secrets."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Self

import pytest
import yaml
from alerts_support import REPO_ROOT
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from alert_service.config import Config, base_schema, build_config, config_schema, load_config
from alert_service.deliver.retry import RetryPolicy
from alert_service.errors import ConfigError
from alert_service.match import AddressSpec, Alert, TextPatternSpec
from alert_service.notify import (
    DEFAULT_REGISTRY,
    Notifier,
    NotifierRegistry,
    WebhookNotifier,
)
from alert_service.notify.command import PLACEHOLDERS
from alert_service.secret import Secret

MINIMAL = """
sources:
  - path: /var/log/osquery/osqueryd.results.log
notifiers:
  - name: local
    type: webhook
    url: http://127.0.0.1:8765/alerts
rules:
  - name: irc
    notify: [local]
    remote_port: [6667]
"""


def write(tmp_path: Path, text: str, name: str = "alerts.yaml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def problems(tmp_path: Path, text: str, env: Mapping[str, str] | None = None) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ=env or {})
    prefix = f"{path}: "
    lines = [str(p) for p in info.value.problems]
    assert all(line.startswith(prefix) for line in lines)
    assert str(info.value) == "\n".join(lines)
    return [line[len(prefix) :] for line in lines]


def test_schemas_are_valid_draft_2020_12() -> None:
    Draft202012Validator.check_schema(dict(base_schema()))
    Draft202012Validator.check_schema(config_schema())
    for type_name in ("webhook",):
        fragment = WebhookNotifier.config_schema
        assert fragment["type"] == "object"
        assert type_name in config_schema()["$defs"]["notifier"]["properties"]["type"]["enum"]


def test_every_object_in_the_schema_forbids_unknown_keys() -> None:
    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            # $defs.conditions is shared: each object that references it forbids the rest.
            shared = where in ("$defs.notifier", "$defs.conditions")
            if node.get("type") == "object" and "properties" in node and not shared:
                assert (
                    node.get("additionalProperties") is False
                    or node.get("unevaluatedProperties") is False
                ), where
            if node.get("$ref") == "#/$defs/conditions":
                assert node.get("unevaluatedProperties") is False, where
            for key, value in node.items():
                walk(value, f"{where}.{key}" if where else key)
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")

    walk(dict(base_schema()), "")


def test_minimal_config_gets_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL), environ={})
    assert isinstance(config, Config)
    (source,) = config.sources
    assert source.start_at == "end"
    assert source.max_line_bytes == 1024 * 1024
    assert source.poll_interval_secs == 0.25
    (notifier,) = config.notifiers
    assert (notifier.name, notifier.type) == ("local", "webhook")
    assert notifier.options == {"url": "http://127.0.0.1:8765/alerts"}
    (rule,) = config.rules
    assert rule.actions == ("added",)
    assert rule.remote_port == (6667,)
    assert rule.host is None
    assert config.delivery == RetryPolicy()
    assert config.known_packs == frozenset({"tracked_connections"})
    assert config.log_level == "info"


def test_example_config_is_valid() -> None:
    env = {"SOC_WEBHOOK_URL": "https://hooks.example.com/x", "SOC_WEBHOOK_AUTH": "Bearer t"}
    config = load_config(str(REPO_ROOT / "examples" / "alerts.example.yaml"), environ=env)
    assert [r.name for r in config.rules] == [
        "suspicious-ports",
        "shell-egress",
        "known-bad-network",
        "known-c2",
        "unattributed-egress",
    ]
    soc = config.notifiers[1].options
    assert soc["url"] == Secret("https://hooks.example.com/x", "env:SOC_WEBHOOK_URL")
    assert soc["headers"]["X-Source"] == "tracked-connections"
    assert config.rules[1].host == TextPatternSpec(glob=("web-*", "api-*.prod.example.com"))
    assert config.rules[2].remote_address == AddressSpec(("198.51.100.0/24", "2001:db8:bad::/48"))


def test_several_errors_are_reported_at_once_sorted_by_path(tmp_path: Path) -> None:
    text = """
sources:
  - path: /x
    start_at: middle
    poll_interval_secs: 0
    bogus: 1
notifiers:
  - name: local
    type: webhook
    url: ftp://example.com
    timeout_secs: "10"
  - name: local
    type: carrier-pigeon
rules:
  - name: r1
    notify: [local, nobody]
    remote_port: [443, "70000", "9-1"]
    remote_address: {include: ["10.0.0.1/8", "nonsense"], exclude: ["::1/128"]}
    process: {name: {regex: ["(unclosed"]}}
    actions: [added, moved]
  - name: r1
    notify: []
    host: {}
extra_top_level: true
"""
    assert problems(tmp_path, text) == [
        "$: unknown key extra_top_level",
        "$.notifiers[0].timeout_secs: '10' is not of type 'number'",
        "$.notifiers[0].url: 'ftp://example.com' does not match '^https?://[^\\\\s]+$'",
        "$.notifiers[1].name: duplicate name 'local' (also notifiers[0])",
        f"$.notifiers[1].type: 'carrier-pigeon' is not one of {list(DEFAULT_REGISTRY.types())}",
        "$.rules[0].actions[1]: 'moved' is not one of ['added', 'removed', 'snapshot']",
        "$.rules[0].notify[1]: no notifier named 'nobody'",
        "$.rules[0].process.name.regex[0]: invalid regex '(unclosed': "
        "missing ): (unclosed (RE2 syntax, linear-time: no backreferences or lookaround)",
        "$.rules[0].remote_address.include[0]: invalid CIDR '10.0.0.1/8': "
        "10.0.0.1/8 has host bits set",
        "$.rules[0].remote_address.include[1]: invalid CIDR 'nonsense': "
        "'nonsense' does not appear to be an IPv4 or IPv6 network",
        "$.rules[0].remote_port[1]: port out of range 0-65535: '70000'",
        "$.rules[0].remote_port[2]: empty port range '9-1': start is above end",
        "$.rules[1].host: {} should be non-empty",
        "$.rules[1].name: duplicate name 'r1' (also rules[0])",
        "$.rules[1].notify: [] should be non-empty",
        "$.sources[0]: unknown key bogus",
        "$.sources[0].poll_interval_secs: 0 is less than or equal to the minimum of 0",
        "$.sources[0].start_at: 'middle' is not one of ['beginning', 'end']",
    ]


def test_missing_sections_and_wrong_types(tmp_path: Path) -> None:
    assert problems(tmp_path, "rules: {}\nsources: []\n") == [
        "$: 'notifiers' is a required property",
        "$.rules: {} is not of type 'array'",
        "$.sources: [] should be non-empty",
    ]


def test_numeric_paths_sort_numerically(tmp_path: Path) -> None:
    rules = "\n".join(
        f"  - {{name: r{i}, notify: [local], remote_port: [{70000 if i in (2, 10) else 1}]}}"
        for i in range(11)
    )
    text = MINIMAL.split("rules:", 1)[0] + "rules:\n" + rules + "\n"
    found = problems(tmp_path, text)
    assert [p.split(":")[0] for p in found] == [
        "$.rules[2].remote_port[0]",
        "$.rules[10].remote_port[0]",
    ]


def test_webhook_section_rejects_unknown_keys_and_needs_url(tmp_path: Path) -> None:
    text = MINIMAL.replace("    url: http://127.0.0.1:8765/alerts\n", "    timeout: 5\n")
    assert problems(tmp_path, text) == [
        "$.notifiers[0]: 'url' is a required property",
        "$.notifiers[0]: unknown key timeout",
    ]


def test_secrets_from_environment(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        "    url: http://127.0.0.1:8765/alerts\n",
        "    url: {env: HOOK_URL}\n    headers:\n      Authorization: {env: HOOK_TOKEN}\n",
    )
    config = load_config(
        write(tmp_path, text), environ={"HOOK_URL": "https://h.example/1", "HOOK_TOKEN": "s3cret"}
    )
    options = config.notifiers[0].options
    token = options["headers"]["Authorization"]
    assert isinstance(token, Secret)
    assert token.reveal() == "s3cret"
    assert "s3cret" not in repr(config)
    assert "s3cret" not in str(token)

    assert problems(tmp_path, text, env={"HOOK_URL": ""}) == [
        "$.notifiers[0].headers.Authorization: environment variable HOOK_TOKEN is not set or empty",
        "$.notifiers[0].url: environment variable HOOK_URL is not set or empty",
    ]


def test_secret_reference_shape_is_validated(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        "    url: http://127.0.0.1:8765/alerts\n",
        "    url: {env: 'not valid', default: x}\n",
    )
    assert problems(tmp_path, text) == [
        "$.notifiers[0].url: unknown key default",
        "$.notifiers[0].url.env: 'not valid' does not match '^[A-Za-z_][A-Za-z0-9_]*$'",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "$: the configuration is empty"),
        ("a: [1\n", "$: invalid YAML at line 2, column 1"),
        ("a: 1\na: 2\n", "$: invalid YAML at line 2, column 1: found duplicate key 'a'"),
        ("- 1\n", "$: [1] is not of type 'object'"),
    ],
)
def test_unreadable_documents(tmp_path: Path, text: str, message: str) -> None:
    (found,) = problems(tmp_path, text)
    assert found.startswith(message)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(str(tmp_path / "absent.yaml"))


def test_each_notifier_type_brings_its_own_schema() -> None:
    registry = NotifierRegistry()

    @registry.register("stub")
    class Stub(Notifier):
        config_schema: ClassVar[Mapping[str, Any]] = {
            "type": "object",
            "properties": {"channel": {"type": "string"}},
            "required": ["channel"],
        }

        @classmethod
        def from_config(cls, name: str, options: Mapping[str, Any]) -> Self:
            return cls(name)

        def render(self, alert: Alert) -> dict[str, Any]:
            return {}

        def send(self, payload: Mapping[str, Any], *, idempotency_key: str) -> None:
            pass

    doc = yaml.safe_load(MINIMAL)
    doc["notifiers"] = [{"name": "local", "type": "stub", "channel": "#soc"}]
    config = build_config(doc, "x.yaml", registry=registry, environ={})
    assert config.notifiers[0].options == {"channel": "#soc"}
    doc["notifiers"] = [{"name": "local", "type": "stub", "url": "http://x"}]
    with pytest.raises(ConfigError) as info:
        build_config(doc, "x.yaml", registry=registry, environ={})
    assert [str(p) for p in info.value.problems] == [
        "x.yaml: $.notifiers[0]: 'channel' is a required property",
        "x.yaml: $.notifiers[0]: unknown key url",
    ]
    assert Stub.type == "stub"
    with pytest.raises(ValueError, match="already registered"):
        registry.register("stub")(WebhookNotifier)


def test_json_config_works_too(tmp_path: Path) -> None:
    doc = yaml.safe_load(MINIMAL)
    config = load_config(write(tmp_path, json.dumps(doc), "alerts.json"), environ={})
    assert config.rules[0].name == "irc"


EVERY_PROBLEM_AT_ONCE = """
sources:
  - path: /x
notifiers:
  - name: local
    type: webhook
    url: http://127.0.0.1:1/a
    timout_secs: 5
    signing_secret: {file: SECRET_FILE}
  - name: run
    type: command
    command: [/bin/echo, "{nope}", 5]
rules:
  - name: r1
    notify: [local]
    remote_port: [443, "9-1", 80.5]
    process: {name: {regex: ["(unclosed"]}, nmae: {exact: [x]}}
    exclude:
      - "x"
      - {remote_port: ["9-1"], bogus: 1}
  - name: r2
    notify: [local, {a: 1}, nobody]
    remote_prot: [1]
    remote_address: {include: ["nonsense"], include_files: [5, IOC_FILE]}
    user: {uid: [true, "9-1"], name: {regex: [7, "[x"]}}
"""


def test_one_run_lists_schema_and_semantic_problems_of_the_same_items(tmp_path: Path) -> None:
    # Semantic checks (ports, regexes, CIDRs, IOC files, secrets, notifier options) run
    # on every value that passed its own schema check, even when a sibling key, an
    # unknown key or another list item failed: fixing the first report must not reveal
    # new problems (review finding: check-config needed two runs).
    secret = tmp_path / "missing-secret"
    ioc = tmp_path / "missing.ioc"
    text = EVERY_PROBLEM_AT_ONCE.replace("SECRET_FILE", str(secret)).replace("IOC_FILE", str(ioc))
    found = problems(tmp_path, text)
    assert found == [
        "$.notifiers[0]: unknown key timout_secs",
        f"$.notifiers[0].signing_secret: cannot read secret file {secret}: "
        "No such file or directory",
        "$.notifiers[1].command[1]: unknown placeholder: {nope}; known: "
        + ", ".join(f"{{{n}}}" for n in sorted(PLACEHOLDERS)),
        "$.notifiers[1].command[2]: 5 is not of type 'string'",
        "$.rules[0].exclude[0]: 'x' is not of type 'object'",
        "$.rules[0].exclude[1]: unknown key bogus",
        "$.rules[0].exclude[1].remote_port[0]: empty port range '9-1': start is above end",
        "$.rules[0].process: unknown key nmae",
        "$.rules[0].process.name.regex[0]: invalid regex '(unclosed': "
        "missing ): (unclosed (RE2 syntax, linear-time: no backreferences or lookaround)",
        "$.rules[0].remote_port[1]: empty port range '9-1': start is above end",
        "$.rules[0].remote_port[2]: 80.5 is not of type 'integer', 'string'",
        "$.rules[1]: unknown key remote_prot",
        "$.rules[1].notify[1]: {'a': 1} is not of type 'string'",
        "$.rules[1].notify[2]: no notifier named 'nobody'",
        "$.rules[1].remote_address.include[0]: invalid CIDR 'nonsense': "
        "'nonsense' does not appear to be an IPv4 or IPv6 network",
        "$.rules[1].remote_address.include_files[0]: 5 is not of type 'string'",
        f"$.rules[1].remote_address.include_files[1]: cannot read IOC file {ioc}: "
        "No such file or directory",
        "$.rules[1].user.name.regex[0]: 7 is not of type 'string'",
        "$.rules[1].user.name.regex[1]: invalid regex '[x': "
        "missing ]: [x (RE2 syntax, linear-time: no backreferences or lookaround)",
        "$.rules[1].user.uid[0]: True is not of type 'integer', 'string'",
        "$.rules[1].user.uid[1]: empty uid range '9-1': start is above end",
    ]


@pytest.mark.parametrize(
    "garbage",
    [
        "remote_port: {a: 1}",
        "remote_port: [[1], {a: 1}, null, 1.5, true]",
        "process: [1]",
        "process: {name: [1], path: {regex: {a: 1}}, cmdline: {glob: 5}}",
        "remote_address: {include: [[1]], exclude: 5, include_files: [{a: 1}], exclude_files: [3]}",
        "user: {uid: {a: 1}, name: 5}",
        "user: {uid: [[1], null, 1.5]}",
        "exclude: [[1], null, 5, {remote_port: [null]}]",
        "exclude: {a: 1}",
        "notify: {a: 1}",
        "notify: [[1], {a: 1}, null]",
        "dedup_window_secs: abc",
        "actions: {a: 1}",
        "queries: [[1]]",
        "direction: [[1]]",
        "host: {regex: [[1]]}",
        "1.5: x",
        "null: x",
    ],
)
def test_malformed_values_are_reported_not_raised(tmp_path: Path, garbage: str) -> None:
    notify = "" if garbage.startswith("notify") else "    notify: [local]\n"
    text = MINIMAL.split("rules:", 1)[0] + f"rules:\n  - name: r1\n{notify}    {garbage}\n"
    text += "  - {name: r2, notify: [local], remote_port: ['9-1']}\n"
    found = problems(tmp_path, text)
    assert found
    assert found[-1] == "$.rules[1].remote_port[0]: empty port range '9-1': start is above end"


@pytest.mark.parametrize(
    "garbage",
    [
        "command: [[1], {a: 1}, null]",
        "command: {a: 1}",
        "command: [5, '{nope}']",
        "env: {'bad name': x, GOOD: {env: NOT_SET_ANYWHERE}}",
        "env: [1]",
        "env: {1.5: 5, null: x, true: {env: 5}}",
        "timeout_secs: {a: 1}",
    ],
)
def test_malformed_notifier_options_are_reported_not_raised(tmp_path: Path, garbage: str) -> None:
    text = MINIMAL.replace(
        "  - name: local\n    type: webhook\n    url: http://127.0.0.1:8765/alerts\n",
        "  - name: local\n    type: webhook\n    url: http://127.0.0.1:8765/alerts\n"
        f"  - name: run\n    type: command\n    {garbage}\n",
    )
    found = problems(tmp_path, text)
    assert found
    assert all(p.startswith("$.notifiers[1]") for p in found), found


def test_unhashable_names_are_reported_not_raised(tmp_path: Path) -> None:
    text = MINIMAL.replace("  - name: local\n", "  - name: {a: 1}\n").replace(
        "  - name: irc\n", "  - name: [1]\n"
    )
    assert problems(tmp_path, text) == [
        "$.notifiers[0].name: {'a': 1} is not of type 'string'",
        "$.rules[0].name: [1] is not of type 'string'",
        "$.rules[0].notify[0]: no notifier named 'local'",
    ]


def test_integers_with_a_leading_zero_are_refused(tmp_path: Path) -> None:
    # YAML 1.1 reads 0443 as octal 291: a rule meant for 443 would watch port 291.
    text = MINIMAL.replace("remote_port: [6667]", "remote_port: [0443, '0443', 0, 00, -010]")
    text = text.replace("    url:", "    timeout_secs: 0_10\n    url:")
    assert problems(tmp_path, text) == [
        "$.notifiers[0].timeout_secs: 0_10 is written with a leading zero, which YAML reads "
        "as octal 8; write 10 (or quote it)",
        "$.rules[0].remote_port[0]: 0443 is written with a leading zero, which YAML reads "
        "as octal 291; write 443 (or quote it)",
        "$.rules[0].remote_port[3]: 00 is written with a leading zero, which YAML reads "
        "as octal 0; write 0 (or quote it)",
        "$.rules[0].remote_port[4]: -010 is written with a leading zero, which YAML reads "
        "as octal -8; write -10 (or quote it)",
    ]
    # Quoted, it is text: decimal 443 for a port.
    fixed = MINIMAL.replace("remote_port: [6667]", "remote_port: ['0443', 0, 443]")
    assert load_config(write(tmp_path, fixed), environ={}).rules[0].remote_port == ("0443", 0, 443)


def test_mapping_keys_must_be_text(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        "    url: http://127.0.0.1:8765/alerts\n",
        "    url: http://127.0.0.1:8765/alerts\n"
        "    headers: {null: x, 7: y, on: z, 0443: a, 2020-01-02: b}\n",
    )
    assert problems(tmp_path, text) == [
        "$.notifiers[0].headers[7]: the key 7 is not text; quote it",
        '$.notifiers[0].headers["0443"]: the key 0443 is not text; quote it',
        '$.notifiers[0].headers["2020-01-02"]: the key 2020-01-02 is not text; quote it',
        '$.notifiers[0].headers["null"]: the key null is not text; quote it',
        '$.notifiers[0].headers["true"]: the key true is not text; quote it',
    ]


def test_a_source_path_of_the_wrong_type_is_one_problem(tmp_path: Path) -> None:
    text = MINIMAL.replace("  - path: /var/log/osquery/osqueryd.results.log", "  - path: 5")
    assert problems(tmp_path, text) == ["$.sources[0].path: 5 is not of type 'string'"]


FULL_DOC: dict[str, Any] = {
    "sources": [{"path": "/x", "start_at": "end"}],
    "notifiers": [
        {"name": "hook", "type": "webhook", "url": "http://127.0.0.1:1/", "headers": {"A": "b"}},
        {"name": "run", "type": "command", "command": ["/bin/echo", "{host}"], "env": {"A": "b"}},
    ],
    "rules": [
        {
            "name": "r",
            "notify": ["hook", "run"],
            "remote_port": [443, "6660-6669"],
            "remote_address": {"include": ["10.0.0.0/8"], "include_files": ["/nonexistent"]},
            "process": {"name": {"regex": ["nc.*"], "exact": ["nc"]}},
            "user": {"uid": [0, "1000-2000"], "name": {"glob": ["r*"]}},
            "exclude": [{"remote_port": [22], "host": {"exact": ["a"]}}],
        }
    ],
    "delivery": {"max_attempts": 3},
}

_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 70000),
    st.floats(allow_nan=False),
    st.text(max_size=8),
)
_GARBAGE = st.recursive(
    _LEAF,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.one_of(st.text(max_size=6), st.integers(0, 9)), inner, max_size=3),
    ),
    max_leaves=6,
)


def _paths(value: Any, parts: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [parts]
    if isinstance(value, dict):
        for key, item in value.items():
            out += _paths(item, (*parts, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out += _paths(item, (*parts, i))
    return out


@settings(deadline=None, max_examples=300)
@given(st.data())
def test_any_value_anywhere_is_reported_never_raised(data: st.DataObject) -> None:
    doc = copy.deepcopy(FULL_DOC)
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(_paths(doc)[1:]))
        target = doc
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = data.draw(_GARBAGE)
    try:
        build_config(doc, "fuzz.yaml", environ={})
    except ConfigError as err:
        assert err.problems
        assert all(str(p).startswith("fuzz.yaml: $") for p in err.problems)
