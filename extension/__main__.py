"""``python -m extension``: the same as the ``tracked-connections-extension`` command."""

from __future__ import annotations

import sys

from extension.cli import main

sys.exit(main())
