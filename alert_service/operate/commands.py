"""The operator subcommands of ``tracked-connections-alerts``.

``status``, ``outbox list|show|retry|purge``, ``silence add|list|expire`` and
``test-notifier``. Each reads the configuration (``--config FILE``, default
``$TRACKED_CONNECTIONS_ALERTS_CONFIG`` or ``/etc/tracked-connections/alerts.yaml``)
for the state directory and the notifiers, prints text (or one JSON document with
``--json``) on stdout, and errors on stderr.

They work on either state backend (``state.backend``: the SQLite file in
``state_dir``, or the PostgreSQL schema every instance of a cluster shares) and are
safe while ``run`` runs: reads use a read-only connection (WAL-mode SQLite, or
read-only PostgreSQL transactions); writes (retry, purge, silences) are short
transactions that the service's own wait for (SQLite: 30 s busy timeout; PostgreSQL:
row locks).

They never create or upgrade a PostgreSQL schema (``run`` does): a missing schema or
table is exit 1, naming the schema; a schema of an older version is used as it is,
with a note on stderr. On SQLite the writes create a missing state database (a
silence may be set before the first run); the reads say it is missing.

Exit codes: 0 done; 1 a problem (invalid config, no state database, unknown row,
silence or notifier, a test notification not accepted); 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import time
from collections.abc import Callable
from typing import Any

from alert_service.config import Config, load_config
from alert_service.errors import ConfigError
from alert_service.notify.literal import visible
from alert_service.operate.timespec import format_time, parse_duration, parse_time
from alert_service.operate.views import (
    entry_doc,
    run_text,
    state_path,
    state_target,
    status_doc,
    test_notification,
)
from alert_service.state.db import StateConnection, open_state_reader, open_state_writer
from alert_service.state.inspect import (
    OUTBOX_STATES,
    get_entry,
    list_entries,
    purge_sent,
    retry_rows,
)
from alert_service.state.postgres import PG_SCHEMA_VERSION, PgConnection
from alert_service.state.silences import add_silence, expire_silence, list_silences

__all__ = ["COMMANDS", "CONFIG_ENV", "DEFAULT_CONFIG", "add_commands", "run_command", "safe_text"]

DEFAULT_CONFIG = "/etc/tracked-connections/alerts.yaml"
CONFIG_ENV = "TRACKED_CONNECTIONS_ALERTS_CONFIG"
COMMANDS = frozenset({"status", "outbox", "silence", "test-notifier"})
"""Top-level commands this module handles."""

_PROG = "tracked-connections-alerts"


class _CommandError(Exception):
    """A problem to print on stderr, exit 1."""


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=os.environ.get(CONFIG_ENV, DEFAULT_CONFIG),
        help=f"YAML configuration (default ${CONFIG_ENV} or {DEFAULT_CONFIG})",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")


def _add(
    sub: Any, name: str, summary: str, description: str, example: str
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=summary,
        description=description,
        epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


def add_commands(sub: Any) -> None:
    """Add the operator commands to ``sub`` (``ArgumentParser.add_subparsers()``)."""
    status = _add(
        sub,
        "status",
        "show sources, outbox counts per destination and silences",
        "Show each source's lag (bytes not yet read) and last committed line, the\n"
        "outbox rows per destination (pending, sent, dead, suppressed, silenced),\n"
        "each destination's last success and last error, and the silences in force.\n"
        "Safe while run runs (read-only).",
        f"{_PROG} status --config /etc/tracked-connections/alerts.yaml",
    )
    _common(status)

    outbox = _add(
        sub,
        "outbox",
        "list, show, retry or purge outbox rows",
        "Work with the outbox: the alerts queued per destination and their states.",
        f"{_PROG} outbox list --state dead",
    )
    osub = outbox.add_subparsers(dest="outbox_command", required=True, metavar="ACTION")
    olist = _add(
        osub,
        "list",
        "list rows, newest first",
        "List outbox rows, newest first, filtered by state, rule, notifier, host and time.",
        f"{_PROG} outbox list --state dead --notifier slack --since 2h",
    )
    _common(olist)
    olist.add_argument("--state", choices=OUTBOX_STATES, help="only rows in this state")
    olist.add_argument("--rule", metavar="R", help="only rows of this rule")
    olist.add_argument("--notifier", metavar="N", help="only rows for this notifier")
    olist.add_argument(
        "--host", metavar="H", help="only rows of this host (identifier or hostname decoration)"
    )
    olist.add_argument(
        "--since", metavar="T", help="only rows queued since T (2h = two hours ago, or ISO 8601)"
    )
    olist.add_argument("--limit", type=int, default=100, help="most rows shown (default 100)")
    oshow = _add(
        osub,
        "show",
        "show one row with its rendered payload",
        "Show one outbox row: its state, attempts, last error, the stored alert and\n"
        "the payload its notifier sends (secrets shown as <secret>).",
        f"{_PROG} outbox show 42",
    )
    _common(oshow)
    oshow.add_argument("id", type=int, metavar="ID", help="row id (from outbox list)")
    oretry = _add(
        osub,
        "retry",
        "send dead or silenced rows again, with the same alert ids",
        "Put rows back in the queue (dead or silenced ones; pending and sent rows are\n"
        "left alone). They keep their alert id and webhook-id, so receivers drop a\n"
        "repeat. A running service sends them at its next poll.",
        f"{_PROG} outbox retry --dead --notifier hook",
    )
    _common(oretry)
    oretry.add_argument("ids", nargs="*", metavar="ID", help="row ids or alert ids")
    oretry.add_argument("--dead", action="store_true", help="every dead row")
    oretry.add_argument("--notifier", metavar="N", help="only rows for this notifier")
    opurge = _add(
        osub,
        "purge",
        "delete sent rows delivered before a time",
        "Delete rows in state sent that were delivered before T. The service also\n"
        "deletes finished rows after delivery.retention_secs by itself.",
        f"{_PROG} outbox purge --sent-before 7d",
    )
    _common(opurge)
    opurge.add_argument(
        "--sent-before", required=True, metavar="T", help="7d = a week ago, or ISO 8601"
    )

    silence = _add(
        sub,
        "silence",
        "add, list or expire silences",
        "Silences hold back the alerts they match: matched rows are stored as\n"
        "silenced (visible in outbox list and status) and not sent. They end by\n"
        "themselves and survive restarts.",
        f'{_PROG} silence add --for 2h --rule ssh-out --comment "backup window, ops-123"',
    )
    ssub = silence.add_subparsers(dest="silence_command", required=True, metavar="ACTION")
    sadd = _add(
        ssub,
        "add",
        "silence matching alerts for a while",
        "Add a silence: every matcher given must match (rule name, host identifier or\n"
        "hostname, process name, remote address in CIDR).",
        f'{_PROG} silence add --for 2h --host web-01 --remote 10.0.0.0/8 --comment "scan"',
    )
    _common(sadd)
    sadd.add_argument("--for", dest="duration", required=True, metavar="DURATION", help="2h, 30m")
    sadd.add_argument("--rule", metavar="R")
    sadd.add_argument("--host", metavar="H", help="host identifier or hostname decoration")
    sadd.add_argument("--process", metavar="P")
    sadd.add_argument("--remote", metavar="CIDR")
    sadd.add_argument("--comment", required=True, metavar="TEXT", help="who and why")
    slist = _add(
        ssub,
        "list",
        "list silences in force",
        "List the silences in force (--all: ended ones too), newest first.",
        f"{_PROG} silence list",
    )
    _common(slist)
    slist.add_argument("--all", action="store_true", help="ended silences too")
    sexp = _add(
        ssub,
        "expire",
        "end a silence now",
        "End a silence now; alerts matching it are sent again from the next poll.",
        f"{_PROG} silence expire 3",
    )
    _common(sexp)
    sexp.add_argument("id", type=int, metavar="ID")

    test = _add(
        sub,
        "test-notifier",
        "send one synthetic test alert through a notifier",
        "Send one alert marked as a test (rule test-notifier, host\n"
        "tracked-connections-test) through the configured notifier NAME: rendered,\n"
        "signed and with its timeouts, as run sends. Prints the HTTP outcome; exit 1\n"
        "when not accepted. The outbox is not touched.",
        f"{_PROG} test-notifier slack",
    )
    _common(test)
    test.add_argument("name", metavar="NAME", help="notifier name")


def _config(args: argparse.Namespace) -> Config:
    try:
        return load_config(args.config)
    except ConfigError as err:
        raise _CommandError("\n".join(str(p) for p in err.problems)) from err


def _read(config: Config) -> StateConnection:
    try:
        conn = open_state_reader(state_target(config))
    except (OSError, sqlite3.Error) as err:
        raise _CommandError(str(err)) from err
    _older_schema_note(config, conn)
    return conn


def _write(config: Config) -> StateConnection:
    try:
        conn = open_state_writer(state_target(config))
    except (OSError, sqlite3.Error) as err:
        raise _CommandError(f"{state_path(config)}: {err}") from err
    _older_schema_note(config, conn)
    return conn


def _older_schema_note(config: Config, conn: StateConnection) -> None:
    """Say on stderr that a PostgreSQL schema of an older version is used as it is."""
    if isinstance(conn, PgConnection) and conn.schema_version < PG_SCHEMA_VERSION:
        print(
            f"note: state schema {config.state.schema} is version {conn.schema_version},"
            f" this command knows {PG_SCHEMA_VERSION}: used as it is, not upgraded"
            " (instances of the older version may still run on it; run of this version"
            " upgrades it when it starts)",
            file=sys.stderr,
        )


def safe_text(text: str) -> str:
    """``text`` for an operator's terminal or page: a host name or command line cannot
    drive it (:func:`~alert_service.notify.literal.visible`); lines stay lines."""
    return visible(text, keep_newlines=True)


def _print(args: argparse.Namespace, doc: Any, text: Callable[[], str]) -> None:
    if args.json:
        # ASCII only: every control or bidi character of attacker-controlled values
        # is a \uNNNN escape, never raw in the terminal.
        print(json.dumps(doc, indent=2, ensure_ascii=True, default=str))
    else:
        print(safe_text(text()))


def _status(args: argparse.Namespace) -> int:
    config = _config(args)
    conn = _read(config)
    try:
        doc = status_doc(config, conn, time.time())
    finally:
        conn.close()

    def text() -> str:
        lines = [f"state: {doc['state']}", f"run: {run_text(doc)}"]
        lines.append("sources:")
        for s in doc["sources"]:
            lag = "-" if s["lag_bytes"] is None else f"{s['lag_bytes']} bytes"
            lines.append(f"  {s['source']}  lag {lag}  last line {format_time(s['last_line_at'])}")
        lines.append("destinations:")
        for name, d in doc["destinations"].items():
            counts = " ".join(f"{k} {d[k]}" for k in OUTBOX_STATES)
            lines.append(f"  {name}: {counts}")
            lines.append(f"    last success {format_time(d['last_success_at'])}")
            if d["last_error"]:
                lines.append(f"    last error {d['last_error']} (alert {d['last_error_alert_id']})")
        lines.append("silences in force:" if doc["silences"] else "silences in force: none")
        lines += [_silence_line(s) for s in doc["silences"]]
        if "leases" in doc:  # the PostgreSQL state of a cluster
            lines.append("leases:" if doc["leases"] else "leases: none")
            lines += [
                f"  {r['name']}  owner {r['owner']}  token {r['token']}"
                f"  {'expires in' if r['expires_in_secs'] > 0 else 'expired'}"
                f" {abs(r['expires_in_secs']):.1f} s"
                for r in doc["leases"]
            ]
            lines.append(f"members ended in the last hour: {doc['expired_members']}")
        return "\n".join(lines)

    _print(args, doc, text)
    return 0


def _silence_line(s: dict[str, Any]) -> str:
    matchers = " ".join(f"{k}={s[k]}" for k in ("rule", "host", "process", "remote") if s[k])
    return f"  #{s['id']} until {format_time(s['ends_at'])} {matchers}  {s['comment']!r}"


def _outbox(args: argparse.Namespace) -> int:
    config = _config(args)
    now = time.time()
    action = args.outbox_command
    if action == "list":
        since = None if args.since is None else _time(args.since, now)
        conn = _read(config)
        try:
            entries = list_entries(
                conn,
                state=args.state,
                rule=args.rule,
                destination=args.notifier,
                host=args.host,
                since=since,
                limit=args.limit,
            )
        finally:
            conn.close()
        docs = [e.summary() for e in entries]

        def text() -> str:
            lines = ["ID  STATE  QUEUED  NOTIFIER  RULE  HOST  ALERT_ID  ATTEMPTS  LAST_ERROR"]
            lines += [
                f"{e.id}  {e.state}  {format_time(e.created_at)}  {e.destination}  {e.rule}"
                f"  {e.host}  {e.alert_id}  {e.attempts}  {e.last_error or '-'}"
                for e in entries
            ]
            return "\n".join(lines)

        _print(args, docs, text)
        return 0
    if action == "show":
        conn = _read(config)
        try:
            entry = get_entry(conn, args.id)
        finally:
            conn.close()
        if entry is None:
            raise _CommandError(f"no outbox row {args.id}")
        doc = entry_doc(config, entry)
        _print(args, doc, lambda: json.dumps(doc, indent=2, ensure_ascii=True))
        return 0
    conn = _write(config)
    try:
        if action == "retry":
            if not args.ids and not args.dead:
                raise _CommandError("outbox retry: give row ids, alert ids or --dead")
            row_ids = [int(i) for i in args.ids if i.isdigit()]
            alert_ids = [i for i in args.ids if not i.isdigit()]
            rows = retry_rows(
                conn,
                now,
                row_ids=row_ids,
                alert_ids=alert_ids,
                all_dead=args.dead,
                destination=args.notifier,
            )
            docs = [r.summary() for r in rows]

            def text() -> str:
                lines = [f"queued again: {len(rows)}"]
                lines += [
                    f"  {r.id}  {r.destination}  {r.rule}  {r.alert_id}  (was {r.state})"
                    for r in rows
                ]
                return "\n".join(lines)

            _print(args, {"retried": docs}, text)
            return 0
        before = _time(args.sent_before, now)
        deleted = purge_sent(conn, before)
        _print(
            args,
            {"deleted": deleted, "sent_before": before},
            lambda: f"deleted {deleted} sent rows delivered before {format_time(before)}",
        )
        return 0
    finally:
        conn.close()


def _time(text: str, now: float) -> float:
    try:
        return parse_time(text, now)
    except ValueError as err:
        raise _CommandError(str(err)) from err


def _silence(args: argparse.Namespace) -> int:
    config = _config(args)
    now = time.time()
    action = args.silence_command
    if action == "list":
        conn = _read(config)
        try:
            found = list_silences(conn, now, all=args.all)
        finally:
            conn.close()
        docs = [s.as_dict() for s in found]
        _print(
            args,
            docs,
            lambda: "\n".join(_silence_line(d) for d in docs) if docs else "no silences",
        )
        return 0
    conn = _write(config)
    try:
        if action == "add":
            try:
                silence = add_silence(
                    conn,
                    now=now,
                    duration_secs=parse_duration(args.duration),
                    comment=args.comment,
                    rule=args.rule,
                    host=args.host,
                    process=args.process,
                    remote=args.remote,
                )
            except ValueError as err:
                raise _CommandError(f"silence add: {err}") from err
            doc = silence.as_dict()
            _print(args, doc, lambda: f"silence {silence.id} added\n{_silence_line(doc)}")
            return 0
        if not expire_silence(conn, args.id, now):
            raise _CommandError(f"no silence {args.id} in force")
        _print(args, {"expired": args.id}, lambda: f"silence {args.id} expired")
        return 0
    finally:
        conn.close()


def _test_notifier(args: argparse.Namespace) -> int:
    config = _config(args)
    try:
        doc = test_notification(config, args.name, time.time())
    except KeyError:
        names = ", ".join(n.name for n in config.notifiers) or "none"
        raise _CommandError(f"no notifier named {args.name!r} (configured: {names})") from None
    except ValueError as err:
        raise _CommandError(str(err)) from None

    def text() -> str:
        status = "-" if doc["http_status"] is None else str(doc["http_status"])
        verdict = "delivered" if doc["delivered"] else "NOT delivered"
        return (
            f"{doc['notifier']} ({doc['type']}): {verdict}, HTTP {status}: {doc['outcome']}\n"
            f"test alert id {doc['alert_id']}"
        )

    _print(args, doc, text)
    return 0 if doc["delivered"] else 1


def run_command(args: argparse.Namespace) -> int:
    """Run the parsed operator command ``args.command``; return the exit code."""
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "status": _status,
        "outbox": _outbox,
        "silence": _silence,
        "test-notifier": _test_notifier,
    }
    try:
        return handlers[args.command](args)
    except _CommandError as err:
        print(f"{args.command}: {err}", file=sys.stderr)
        return 1
