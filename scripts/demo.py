"""Run the whole pipeline on this host, in the foreground, until Ctrl-C.

osqueryd (when one is on PATH) or the osqueryd stand-in launches the
extension and runs the pack every 2 s; the alert service follows the result
log with examples/demo-alerts.yaml and posts to a webhook receiver on
127.0.0.1 that prints each alert. A listener on 127.0.0.1:4444 gives you
something to connect to; see the README.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
PACK = ROOT / "packs" / "tracked_connections.conf"
CONFIG_TEMPLATE = ROOT / "examples" / "demo-alerts.yaml"


def say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


class _Receiver(BaseHTTPRequestHandler):
    """Prints every webhook it receives."""

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        self.send_response(200)
        self.end_headers()
        try:
            alert: Any = json.loads(body)
        except ValueError:
            say(f"webhook received a non-JSON body of {length} bytes")
            return
        print("\n=== ALERT " + "=" * 60, flush=True)
        print(json.dumps(alert, indent=2, ensure_ascii=False), flush=True)
        print("=" * 70 + "\n", flush=True)

    def log_message(self, format: str, *args: Any) -> None:
        return


def start_receiver() -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def start_c2_listener(port: int) -> socket.socket:
    """A listener that accepts and holds connections, standing in for a C2 server."""
    listener = socket.create_server(("127.0.0.1", port))

    def accept_forever() -> None:
        held: list[socket.socket] = []
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            held.append(conn)

    threading.Thread(target=accept_forever, daemon=True).start()
    return listener


def write_alert_config(state: Path, receiver_url: str, results_log: Path, c2_port: int) -> Path:
    """The demo's alert config: our log, our receiver, and the rule on ``c2_port``."""
    config: dict[str, Any] = yaml.safe_load(CONFIG_TEMPLATE.read_text(encoding="utf-8"))
    for source in config["sources"]:
        source["path"] = str(results_log)
    for notifier in config["notifiers"]:
        notifier["url"] = receiver_url
    for rule in config["rules"]:
        if "remote_port" in rule:  # the rule follows the listener wherever --c2-port puts it
            rule["remote_port"] = [c2_port]
            rule["description"] = f"A process connected to the demo C2 port {c2_port}."
    config["state_dir"] = str(state / "alerts-state")
    path = state / "alerts.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def shout(message: str) -> None:
    """A problem the user must see: framed, on stderr."""
    bar = "!" * 70
    print(f"\n{bar}\n[demo] {message}\n{bar}\n", file=sys.stderr, flush=True)


def registered(socket_path: str) -> bool:
    """Whether an extension has registered: osquery's extension manager gives each
    registered extension its own socket, ``<extensions_socket>.<uuid>`` (osquery
    osquery/extensions/extensions.cpp, 5.x), which the stand-in also creates."""
    base = Path(socket_path)
    return any(base.parent.glob(base.name + ".*"))


def wait_until_running(
    socket_path: str,
    results_log: Path,
    children: list[tuple[str, subprocess.Popen[bytes]]],
    timeout_secs: float,
) -> bool:
    """Wait for the extension to register and the pack's first run to be logged.

    Says loudly what it is still waiting for every 5 s; False (after a framed
    message) when a child exits or ``timeout_secs`` pass first.
    """
    started = time.monotonic()
    next_note = started + 5

    def first_run_logged() -> bool:
        return results_log.exists() and results_log.stat().st_size > 0

    stages: list[tuple[str, Callable[[], bool]]] = [
        ("the extension to register", lambda: registered(socket_path)),
        ("the pack's first run in the results log", first_run_logged),
    ]
    for what, done in stages:
        while not done():
            for name, child in children:
                if child.poll() is not None:
                    shout(f"{name} exited with status {child.returncode} while waiting for {what}")
                    return False
            now = time.monotonic()
            if now - started > timeout_secs:
                shout(
                    f"FAILED: still waiting for {what} after {timeout_secs:.0f} s; stopping. "
                    "The host may be too busy: retry with a larger --register-timeout-secs."
                )
                return False
            if now >= next_note:
                shout(f"still waiting for {what} ({now - started:.0f} s of {timeout_secs:.0f} s)")
                next_note = now + 5
            time.sleep(0.2)
    return True


def osqueryd_command(
    osqueryd: str, state: Path, socket_path: str, logs: Path, *, extension: list[str], wait: float
) -> list[str]:
    """A real osqueryd, ephemeral, with the extension and the pack."""
    launcher = state / "tracked_connections.ext"
    launcher.write_text(f'#!/bin/sh\nexec {shlex.join(extension)} "$@"\n', encoding="utf-8")
    launcher.chmod(0o755)
    conf = state / "osquery.conf"
    conf.write_text(json.dumps({"packs": {"tracked_connections": str(PACK)}}), encoding="utf-8")
    return [
        osqueryd,
        "--ephemeral",
        "--disable_watchdog",
        "--config_path", str(conf),
        "--extensions_socket", socket_path,
        "--extension", str(launcher),
        "--extensions_require", "tracked_connections",
        "--extensions_timeout", str(int(wait)),
        "--logger_plugin", "filesystem",
        "--logger_path", str(logs),
        "--database_path", str(state / "osquery.db"),
        "--pidfile", str(state / "osqueryd.pid"),
    ]  # fmt: skip


def standin_command(socket_path: str, logs: Path, extension: list[str], wait: float) -> list[str]:
    return [
        sys.executable, "-m", "osqueryd_standin",
        "--extensions_socket", socket_path,
        "--extension", shlex.join(extension),
        "--extensions_require", "tracked_connections",
        "--extensions_timeout", str(wait),
        "--pack", f"tracked_connections={PACK}",
        "--logger_path", str(logs),
        "--ephemeral",
    ]  # fmt: skip


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0] if __doc__ else None,
        epilog="example: scripts/demo --standin --c2-port 5555",
    )
    parser.add_argument("--c2-port", type=int, default=4444, help="demo listener port (4444)")
    parser.add_argument(
        "--standin", action="store_true", help="use the stand-in even if osqueryd is on PATH"
    )
    parser.add_argument(
        "--keep-state", action="store_true", help="keep the logs and state directory on exit"
    )
    parser.add_argument(
        "--register-timeout-secs",
        type=float,
        default=60.0,
        help="give up (exit 1) when the extension has not registered and the pack not run "
        "within this many seconds (60)",
    )
    parser.add_argument(
        "--extension-cmd",
        default=shlex.join([sys.executable, "-m", "extension"]),
        help="command that starts the extension (default: this Python's -m extension)",
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _interrupt)  # stop (and clean up) as on Ctrl-C
    state = Path(tempfile.mkdtemp(prefix="tc-demo-"))
    try:
        return run(args, state)
    finally:
        if args.keep_state:
            say(f"kept {state}")
        else:
            shutil.rmtree(state, ignore_errors=True)


def run(args: argparse.Namespace, state: Path) -> int:
    """Start everything under ``state``; return the exit status (0 after Ctrl-C)."""
    logs = state / "logs"
    logs.mkdir()
    socket_path = str(state / "osquery.em")
    results_log = logs / "osqueryd.results.log"
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    extension = shlex.split(args.extension_cmd)
    if "--state-file" not in extension:
        # The rows a restart gives back live with the demo, not in /var/osquery.
        extension += ["--state-file", str(state / "tracked_connections.state")]
    wait: float = args.register_timeout_secs

    try:
        c2 = start_c2_listener(args.c2_port)
    except OSError as err:
        shout(f"cannot listen on 127.0.0.1:{args.c2_port} ({err}); pick another with --c2-port")
        return 1
    receiver = start_receiver()
    url = f"http://127.0.0.1:{receiver.server_address[1]}/alerts"
    config = write_alert_config(state, url, results_log, args.c2_port)

    osqueryd = None if args.standin else shutil.which("osqueryd")
    if osqueryd:
        say(f"using the real osqueryd at {osqueryd}")
        osq_cmd = osqueryd_command(
            osqueryd, state, socket_path, logs, extension=extension, wait=wait
        )
    else:
        say("no osqueryd on PATH: using the osqueryd stand-in (a test double, not osquery)")
        osq_cmd = standin_command(socket_path, logs, extension, wait)

    alerts_cmd = [sys.executable, "-m", "alert_service", "run", "--config", str(config)]
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    try:
        for name, cmd in (("osqueryd", osq_cmd), ("alert service", alerts_cmd)):
            children.append((name, subprocess.Popen(cmd, cwd=ROOT, env=env)))
        say(f"state and logs in {state}")
        say(f"results log: {results_log}")
        say(f"webhook receiver: {url}")
        say(f"C2 stand-in listening on 127.0.0.1:{args.c2_port}")
        if not wait_until_running(socket_path, results_log, children, wait):
            return 1
        say("ready: the extension is registered and the pack has run")
        say("fire an alert from another terminal with:")
        say(
            "  python3 -c 'import socket, time; "
            f's = socket.create_connection(("127.0.0.1", {args.c2_port})); time.sleep(5)\''
        )
        say("Ctrl-C stops the demo.")
        while all(child.poll() is None for _, child in children):
            time.sleep(0.5)
        for name, child in children:
            if child.returncode is not None:
                shout(f"{name} exited with status {child.returncode}; stopping the demo")
        return 1
    except KeyboardInterrupt:
        say("stopping")
        return 0
    finally:
        # A second Ctrl-C or SIGTERM must not cut the clean-up short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for _, child in reversed(children):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for _, child in reversed(children):
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        c2.close()
        receiver.shutdown()
        receiver.server_close()


if __name__ == "__main__":
    sys.exit(main())
