"""Operator tooling: what ``status``, ``outbox``, ``silence`` and ``test-notifier``
show and do (:mod:`~alert_service.operate.views`), their command line
(:mod:`~alert_service.operate.commands`), the start-up checks of ``run`` and
``check-config --strict`` (:mod:`~alert_service.operate.preflight`), and times as typed
(:mod:`~alert_service.operate.timespec`). The state reads and writes themselves live in
:mod:`alert_service.state.inspect` and :mod:`alert_service.state.silences`."""
