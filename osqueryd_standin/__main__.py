"""``python -m osqueryd_standin``: run the osqueryd stand-in (not osquery)."""

from __future__ import annotations

import sys

from osqueryd_standin.cli import main

if __name__ == "__main__":
    sys.exit(main())
