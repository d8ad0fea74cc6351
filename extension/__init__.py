"""tracked-connections osquery extension.

Serves the table ``tracked_connections`` to osqueryd over osquery's Thrift
extension protocol. The package reads as its pipeline:

- :mod:`extension.collect`: the host's TCP/UDP sockets, as :class:`SocketRecord`.
- :mod:`extension.enrich`: the owning process and the flow attributes
  (direction, Community ID).
- :mod:`extension.serve`: the table plugin and the Thrift server that registers
  with osqueryd.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
