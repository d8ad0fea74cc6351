"""A tiny osquery extension for the stand-in tests, built on the osquery SDK.

Run as a subprocess by the tests (``osqd.launch_extension([sys.executable,
this_file], extra_env=...)``). Configured through the environment:

* ``FAKE_EXT_NAME``: InternalExtensionInfo.name (default "fake_ext").
* ``FAKE_EXT_TABLE``: table name (default "fake_table").
* ``FAKE_EXT_COLUMNS``: JSON list of [name, type] (default id TEXT,
  port INTEGER, big BIGINT, ratio DOUBLE, note TEXT).
* ``FAKE_EXT_ROWS``: path of a JSON file read on every ``generate``: a list
  of row objects, or ``{"fail": "message"}`` to answer with status code 1.
* ``FAKE_EXT_TRACE``: path of a JSON-lines file where every request and the
  start-up argv/env are appended.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import osquery
from osquery.extensions.ttypes import ExtensionResponse, ExtensionStatus

DEFAULT_COLUMNS = [
    ["id", "TEXT"],
    ["port", "INTEGER"],
    ["big", "BIGINT"],
    ["ratio", "DOUBLE"],
    ["note", "TEXT"],
]


def _trace(record: dict[str, Any]) -> None:
    path = os.environ.get("FAKE_EXT_TRACE")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")


class FakeTable(osquery.TablePlugin):  # type: ignore[misc]
    """Rows come from the file named by FAKE_EXT_ROWS."""

    def name(self) -> str:
        return os.environ.get("FAKE_EXT_TABLE", "fake_table")

    def columns(self) -> list[Any]:
        spec = json.loads(os.environ.get("FAKE_EXT_COLUMNS", json.dumps(DEFAULT_COLUMNS)))
        return [osquery.TableColumn(name=n, type=t) for n, t in spec]

    def _load(self) -> Any:
        path = os.environ.get("FAKE_EXT_ROWS")
        if not path or not os.path.exists(path):
            return []
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)

    def call(self, context: dict[str, str]) -> Any:
        _trace({"request": dict(context)})
        if context.get("action") == "generate":
            data = self._load()
            if isinstance(data, dict) and "fail" in data:
                return ExtensionResponse(
                    status=ExtensionStatus(code=1, message=data["fail"]), response=[]
                )
        return super().call(context)

    def generate(self, context: Any) -> list[dict[str, str]]:
        data = self._load()
        return [dict(row) for row in data]


def main() -> None:
    _trace(
        {
            "start": sys.argv[1:],
            "pid": os.getpid(),
            "OSQUERY_EXTENSION": os.environ.get("OSQUERY_EXTENSION"),
        }
    )
    osquery.register_plugin(FakeTable)
    osquery.start_extension(name=os.environ.get("FAKE_EXT_NAME", "fake_ext"), version="1.0.0")


if __name__ == "__main__":
    main()
