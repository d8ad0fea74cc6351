"""docs/rules.md and docs/deploy.md stay in step with the code they describe.

* every key of a rule in the configuration schema has a row in rules.md's key table;
* every option of the response-action notifiers is documented in rules.md;
* every file deploy.md says it installs exists in the repository.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from alert_service.config import base_schema
from alert_service.notify import CommandNotifier, FleetLiveQueryNotifier, FleetScriptNotifier

REPO = Path(__file__).resolve().parents[2]
RULES_MD = (REPO / "docs" / "rules.md").read_text(encoding="utf-8")
DEPLOY_MD = (REPO / "docs" / "deploy.md").read_text(encoding="utf-8")


def _table_keys(text: str) -> set[str]:
    """First-column keys of Markdown table rows: ``| `a` / `b.c` | ...``."""
    keys: set[str] = set()
    for line in text.splitlines():
        if line.startswith("| `"):
            first = line.split("|")[1]
            keys.update(re.findall(r"`([A-Za-z_.]+)`", first))
    return keys


def test_every_rule_key_is_documented() -> None:
    schema: dict[str, Any] = dict(base_schema())
    rule = {**schema["$defs"]["conditions"]["properties"], **schema["$defs"]["rule"]["properties"]}
    documented = _table_keys(RULES_MD)
    missing = [
        k
        for k in rule
        if k not in documented and not any(d.startswith(f"{k}.") for d in documented)
    ]
    assert missing == []
    for group in ("process_condition", "user_condition"):
        prefix = group.split("_")[0]
        for sub in schema["$defs"][group]["properties"]:
            assert f"{prefix}.{sub}" in RULES_MD, f"{prefix}.{sub}"
    for sub in schema["$defs"]["address_condition"]["properties"]:
        assert f"{sub}:" in RULES_MD, sub
    for sub in schema["$defs"]["hostname_condition"]["properties"]:
        assert f"{sub}:" in RULES_MD, sub


def test_every_action_option_is_documented() -> None:
    for cls in (FleetScriptNotifier, FleetLiveQueryNotifier, CommandNotifier):
        assert f"`{cls.type}`" in RULES_MD
        for option in cls.config_schema["properties"]:
            assert f"`{option}`" in RULES_MD or f"{option}:" in RULES_MD, (cls.type, option)


def test_installed_files_exist() -> None:
    paths = set(re.findall(r"`((?:deploy|packs)/[A-Za-z0-9_./-]+)`", DEPLOY_MD))
    assert "deploy/osquery.flags" in paths
    for path in sorted(paths):
        assert (REPO / path.rstrip("/")).exists(), path
