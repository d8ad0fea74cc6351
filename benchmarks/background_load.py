"""Background load of a busy shared host, to run the test suite beside it.

Usage (as root, for the network namespace)::

    python benchmarks/background_load.py &        # prints "ready ..." once loaded
    scripts/test                                  # or any pytest selection
    kill -TERM %1                                 # clean exit, namespace removed

What it holds until SIGINT/SIGTERM (or ``--duration-secs``):

* ``--sockets`` (default 10000) loopback TCP sockets in this process: half
  clients, half accepted ends, over 127.0.0.1 and ::1;
* ``--rate`` (default 500) new loopback connections per second, each closed
  at once by the client, so TIME_WAIT entries with no owner pile up on
  ephemeral ports the tests may also get;
* a network namespace of its own (``tc-load-<pid>``) where a child process
  binds the same TCP and UDP port as this process's listener, holds
  ``--namespace-sockets`` (default 2000) loopback sockets and makes
  ``--namespace-rate`` (default 100) connections per second: records on
  the tests' port numbers that belong to another namespace.

The soft RLIMIT_NOFILE is raised to the hard limit. On exit every socket is
closed, the child stopped and the namespace deleted; a line of counts is
printed every ``--report-secs``. Without root (no ``ip netns``) it says so
and exits 2 unless ``--no-namespace`` is given.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from types import FrameType
from typing import IO

_EPHEMERAL_ERRORS = (OSError,)


class _SignalledError(Exception):
    """Raised by the signal handler to unwind and clean up."""


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    raise _SignalledError(signal.Signals(signum).name)


def raise_nofile(needed: int) -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; fail clearly if that is too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise SystemExit(f"RLIMIT_NOFILE hard limit {hard} < {needed} descriptors needed")
    return hard


@dataclass
class Load:
    """Sockets held and made in the current network namespace."""

    held: list[socket.socket] = field(default_factory=list)
    listeners: list[socket.socket] = field(default_factory=list)
    made: int = 0
    failed: int = 0

    def hold(self, count: int) -> None:
        """Open ``count`` sockets as count/2 connected pairs over 127.0.0.1 and ::1."""
        for index in range(count // 2):
            listener = self.listeners[index % len(self.listeners)]
            client = socket.socket(listener.family, socket.SOCK_STREAM)
            self.held.append(client)
            client.connect(listener.getsockname()[:2])
            self.held.append(listener.accept()[0])

    def churn(self, rate: int, seconds: float) -> None:
        """Make ``rate`` connections per second for ``seconds``; each client closes first."""
        deadline = time.monotonic() + seconds
        step = 0.02
        per_step = max(1, round(rate * step))
        next_at = time.monotonic()
        while time.monotonic() < deadline:
            for index in range(per_step):
                listener = self.listeners[(self.made + index) % len(self.listeners)]
                try:
                    client = socket.create_connection(listener.getsockname()[:2], timeout=1)
                    accepted = listener.accept()[0]
                except _EPHEMERAL_ERRORS:
                    self.failed += 1
                    continue
                client.close()  # active close: TIME_WAIT on the client's port
                accepted.close()
                self.made += 1
            next_at += step
            time.sleep(max(0.0, next_at - time.monotonic()))

    def close(self) -> None:
        for sock in [*self.held, *self.listeners]:
            with contextlib.suppress(OSError):
                sock.close()
        self.held.clear()
        self.listeners.clear()


def _listeners(port: int) -> list[socket.socket]:
    """TCP listeners on 127.0.0.1:port (0 = any) and ::1 (same port when free)."""
    first = socket.create_server(("127.0.0.1", port), backlog=1024)
    port = first.getsockname()[1]
    try:
        second = socket.create_server(("::1", port), family=socket.AF_INET6, backlog=1024)
    except OSError:
        second = socket.create_server(("::1", 0), family=socket.AF_INET6, backlog=1024)
    return [first, second]


def _run_loop(load: Load, rate: int, duration: float | None, report: float, tag: str) -> None:
    started = time.monotonic()
    while duration is None or time.monotonic() - started < duration:
        load.churn(rate, report)
        print(
            f"[{tag}] held {len(load.held)} sockets, made {load.made} connections"
            f" ({load.failed} failed) in {time.monotonic() - started:.0f} s",
            flush=True,
        )


def namespace_child(args: argparse.Namespace) -> int:
    """Runs inside the created namespace: reuse ``--port`` and hold sockets there."""
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    raise_nofile(args.namespace_sockets + 64)
    load = Load(listeners=_listeners(args.port))
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    load.held.append(udp)
    udp.bind(("127.0.0.1", args.port))
    try:
        load.hold(args.namespace_sockets)
        print(f"ready in namespace, port {args.port} reused", flush=True)
        _run_loop(load, args.namespace_rate, None, args.report_secs, "namespace")
    except _SignalledError:
        pass
    finally:
        load.close()
    return 0


def _relay(stream: IO[str]) -> None:
    for line in stream:
        print(line, end="", flush=True)


def _ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sockets", type=int, default=10_000, help="sockets held (10000)")
    parser.add_argument("--rate", type=int, default=500, help="connections per second (500)")
    parser.add_argument("--namespace-sockets", type=int, default=2000)
    parser.add_argument("--namespace-rate", type=int, default=100)
    parser.add_argument("--no-namespace", action="store_true", help="skip the namespace part")
    parser.add_argument("--duration-secs", type=float, default=None, help="stop after (forever)")
    parser.add_argument("--report-secs", type=float, default=10.0)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--namespace-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.namespace_child:
        return namespace_child(args)

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    raise_nofile(args.sockets + 256)
    load = Load(listeners=_listeners(0))
    port = load.listeners[0].getsockname()[1]
    namespace = f"tc-load-{os.getpid()}"
    child: subprocess.Popen[str] | None = None
    created = False
    try:
        if not args.no_namespace:
            try:
                _ip("netns", "add", namespace)
                created = True
                _ip("-n", namespace, "link", "set", "lo", "up")
            except (OSError, subprocess.CalledProcessError) as err:
                print(f"cannot create network namespace {namespace}: {err}", file=sys.stderr)
                print("run as root, or pass --no-namespace", file=sys.stderr)
                return 2
            child = subprocess.Popen(
                [
                    "ip", "netns", "exec", namespace, sys.executable, os.path.abspath(__file__),
                    "--namespace-child", "--port", str(port),
                    "--namespace-sockets", str(args.namespace_sockets),
                    "--namespace-rate", str(args.namespace_rate),
                    "--report-secs", str(args.report_secs),
                ],
                stdout=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            assert child.stdout is not None
            line = child.stdout.readline()
            if not line.startswith("ready"):
                print(f"namespace child failed to start: {line!r}", file=sys.stderr)
                return 1
            threading.Thread(target=_relay, args=(child.stdout,), daemon=True).start()
        load.hold(args.sockets)
        print(
            f"ready: pid {os.getpid()}, {len(load.held)} sockets held, port {port} also bound "
            f"in namespace {namespace if child else '(none)'}, {args.rate} connections/s",
            flush=True,
        )
        _run_loop(load, args.rate, args.duration_secs, args.report_secs, "load")
    except _SignalledError as stop:
        print(f"stopping on {stop}", flush=True)
    finally:
        load.close()
        if child is not None and child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        if created:
            with contextlib.suppress(OSError, subprocess.CalledProcessError):
                _ip("netns", "del", namespace)
    return 0


if __name__ == "__main__":
    sys.exit(main())
