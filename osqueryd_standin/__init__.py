"""osqueryd stand-in: a test double for osqueryd. It is NOT osquery.

osqueryd cannot be installed on this project's machines, so tests and the
demo use this small Python program in its place. It emulates the parts of
osqueryd the project depends on, following the upstream osquery 5.23 sources
cited in each module (summarised in docs/design/osquery-interfaces.md):

* the ExtensionManager Thrift service on a UNIX socket (registration with
  osqueryd's error messages, ping, query, getQueryColumns, options);
* launching extensions with osqueryd's argv and ``OSQUERY_EXTENSION``, health
  checks, ``shutdown()`` and SIGTERM/SIGKILL on stop;
* SQL over extension tables (materialised per query in Python's sqlite3, with
  osqueryd's type conversions) plus ``osquery_registry``/``osquery_extensions``;
* pack loading (discovery, intervals, splay), the wall-clock scheduler,
  differential results with counters, and the filesystem logger's
  ``osqueryd.results.log`` lines, byte for byte.

It has none of osquery's own tables, no watchdog, no RocksDB, no TLS/Fleet
enrollment, no distributed queries, no events. See docs/standin.md.
"""

from __future__ import annotations

from osqueryd_standin.errors import StandinError, StandinQueryError
from osqueryd_standin.registry import RegistrationError
from osqueryd_standin.standin import Standin

__all__ = ["RegistrationError", "Standin", "StandinError", "StandinQueryError"]
