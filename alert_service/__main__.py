"""``python -m alert_service``: same as the ``tracked-connections-alerts`` command."""

from __future__ import annotations

from alert_service.cli import main

raise SystemExit(main())
