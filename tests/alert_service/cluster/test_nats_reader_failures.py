"""The NATS reader process failing under a running instance: killed, hung, garbled.

A ``run`` instance (a real subprocess, SQLite state, a ``nats`` source with four
partitions read by this one instance) reads result lines published the way Fleet
publishes them, through its reader child (``python -m
alert_service.source.nats_reader``). The child is found by its parent's pid in
``/proc`` (never by name alone) and then killed with SIGKILL, stopped with SIGSTOP,
or sent a garbled frame on its answer pipe. Then:

* every alert the lines make reaches the webhook receiver on 127.0.0.1 exactly once
  (``run`` stays up and nothing it sends has an unknown outcome, so no id twice);
* each host's alerts are queued in the order of its lines;
* the failure is a ``nats_reader_failed`` log event, the reader is replaced, and
  ``alert_service_nats_reader_restarts_total`` counts it.

An in-process test checks that ``/health``'s ``source_problems`` shows the failure
while it lasts, and the restart backoff.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from alert_service.pipeline import Pipeline
from alert_service.state import open_state
from alert_service.state.record import decode_record
from alert_service.stats import Stats
from tests.alert_service.cluster.test_cluster_kill import (
    ALERT_EVERY,
    Receiver,
    host_uuid,
    result_line,
)
from tests.alert_service.cluster.test_nats_source import (
    IOC,
    Stream,
    make_config,
)
from tests.alert_service.cluster.test_nats_source import (
    result_line as ioc_line,
)
from tests.helpers.services import need_nats

ROOT = Path(__file__).resolve().parents[3]
PARTITIONS = list("0123")
HOSTS = 20
READER_MODULE = b"alert_service.source.nats_reader"


@pytest.fixture
def stream() -> Iterator[Stream]:
    s = Stream(need_nats())
    yield s
    s.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


def publish(stream: Stream, seqs: range) -> set[tuple[str, int]]:
    """Publish lines ``seqs`` of every host, hosts interleaved (subject
    ``<prefix>.<partition>.<uuid>``, partition = the uuid's first hex digit mod 4);
    the ``(host, local port)`` of the alerts they make."""
    alerts: set[tuple[str, int]] = set()
    for seq in seqs:
        for host in range(HOSTS):
            uid = host_uuid(host)
            part = PARTITIONS[int(uid[0], 16) % len(PARTITIONS)]
            pub = stream.client.publish(f"{stream.prefix}.{part}.{uid}", result_line(host, seq))
            stream.loop.run_until_complete(pub)
            if seq % ALERT_EVERY == 0:
                alerts.add((uid, 10000 + seq))
    stream.loop.run_until_complete(stream.client.flush())
    return alerts


class Instance:
    """One ``run`` subprocess with its own SQLite state, logging JSON to a file."""

    def __init__(self, tmp_path: Path, stream: Stream, receiver: Receiver) -> None:
        self.state_dir = tmp_path / "state"
        self.log = tmp_path / "run.log"
        config = tmp_path / "alerts.yaml"
        doc: dict[str, Any] = {
            "log_level": "info",
            "state_dir": str(self.state_dir),
            "metrics": {"listen_address": "127.0.0.1", "port": 0},
            "sources": [
                {
                    "nats": {
                        "servers": [stream.url],
                        "stream": stream.name,
                        "subject": f"{stream.prefix}.{{partition}}.*",
                        "durable": "alerts",
                        "partitions": PARTITIONS,
                        "ack_wait_secs": 5,
                        "batch_size": 50,
                    },
                    "poll_interval_secs": 0.1,
                }
            ],
            "notifiers": [
                {
                    "name": "hook",
                    "type": "webhook",
                    "url": f"http://127.0.0.1:{receiver.port}/hook",
                    "timeout_secs": 5,
                }
            ],
            "delivery": {"poll_interval_secs": 0.05, "initial_backoff_secs": 0.2},
            "known_packs": ["tracked_connections"],
            "rules": [{"name": "shell-port", "notify": ["hook"], "remote_port": [4444]}],
        }
        config.write_text(yaml.safe_dump(doc))
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "alert_service", "run", str(config)],
                stdout=out,
                stderr=out,
                env=env,
                cwd=ROOT,
            )

    def events(self, name: str) -> list[dict[str, Any]]:
        found = []
        for text in self.log.read_text(errors="replace").splitlines():
            if text.startswith("{") and f'"event":"{name}"' in text:
                found.append(json.loads(text))
        return found

    def readers(self) -> list[int]:
        """The pids of this instance's reader children: processes whose parent is
        this instance (``/proc/<pid>/stat``) running the reader module."""
        return reader_children(self.proc.pid)

    def outbox(self) -> list[tuple[str, int]]:
        """``(host, local port)`` of each outbox row, in the order they were queued."""
        path = self.state_dir / "state.sqlite3"
        if not path.exists():
            return []
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            rows = conn.execute("SELECT payload FROM outbox ORDER BY rowid").fetchall()
        except sqlite3.OperationalError:
            return []  # not created yet
        finally:
            conn.close()
        alerts = [decode_record(r[0]).alert.as_dict() for r in rows]
        return [(a["host"], int(a["connection"]["local_port"])) for a in alerts]

    def metric(self, name: str) -> float:
        port = self.events("ops_listening")[0]["port"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise AssertionError(f"{name} not in /metrics")

    def tail(self) -> str:
        return "".join(self.log.read_text(errors="replace").splitlines(keepends=True)[-20:])

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise


def reader_children(parent: int) -> list[int]:
    """Processes whose parent is ``parent`` and that run the reader module."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue  # exited meanwhile
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == parent and fields[0] != "Z" and READER_MODULE in cmdline:
            found.append(int(entry.name))
    return found


def answer_pipe(pid: int) -> Path:
    """The reader's answer pipe: its one pipe besides standard input/output/error."""
    pipes = [
        fd
        for fd in (Path(f"/proc/{pid}/fd")).iterdir()
        if int(fd.name) > 2 and os.readlink(fd).startswith("pipe:")
    ]
    assert len(pipes) == 1, [os.readlink(p) for p in pipes]
    return pipes[0]


def wait_until(what: str, done: Callable[[], object], secs: float, inst: Instance) -> None:
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        if done():
            return
        assert inst.proc.poll() is None, f"run exited with {inst.proc.returncode}:\n{inst.tail()}"
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for: {what}\n{inst.tail()}")


def one_reader(inst: Instance) -> int:
    got: list[int] = []

    def found() -> bool:
        got[:] = inst.readers()
        return len(got) == 1

    wait_until("one reader process", found, 60, inst)
    return got[0]


def check_delivered(inst: Instance, receiver: Receiver, expected: set[tuple[str, int]]) -> None:
    """Every expected alert queued once, in each host's order, and received once."""
    wait_until("every alert queued", lambda: len(inst.outbox()) >= len(expected), 120, inst)
    wait_until(
        "every alert received",
        lambda: sum(receiver.received().values()) >= len(expected),
        120,
        inst,
    )
    time.sleep(0.5)  # a late duplicate would arrive meanwhile
    rows = inst.outbox()
    assert len(rows) == len(set(rows)) == len(expected)
    assert set(rows) == expected
    received = receiver.received()
    assert len(received) == len(expected)
    assert set(received.values()) == {1}, "a webhook-id arrived twice"
    by_host: dict[str, list[int]] = {}
    for host, port in rows:
        by_host.setdefault(host, []).append(port)
    assert len(by_host) == HOSTS
    assert all(ports == sorted(ports) for ports in by_host.values())


@pytest.mark.timeout(300)
def test_a_killed_reader_is_replaced_and_nothing_is_lost_or_doubled(
    tmp_path: Path, stream: Stream, receiver: Receiver
) -> None:
    expected = publish(stream, range(0, 150))
    inst = Instance(tmp_path, stream, receiver)
    try:
        old = one_reader(inst)
        # midway: some alerts are queued, the reader holds messages not yet committed
        wait_until("the first alerts queued", lambda: len(inst.outbox()) > 0, 60, inst)
        os.kill(old, signal.SIGKILL)
        expected |= publish(stream, range(150, 250))
        wait_until("a new reader", lambda: inst.readers() not in ([], [old]), 60, inst)
        check_delivered(inst, receiver, expected)
        failed = inst.events("nats_reader_failed")
        assert len(failed) == 1
        assert failed[0]["pid"] == old
        assert "exited" in failed[0]["reason"] and "signal 9" in failed[0]["reason"]
        assert failed[0]["restart_in_secs"] == 0.5
        assert inst.metric("alert_service_nats_reader_restarts_total") == 1
        assert old not in inst.readers()
    finally:
        code = inst.stop()
    assert code == 0, inst.tail()


@pytest.mark.timeout(300)
def test_a_stopped_reader_is_detected_killed_and_replaced(
    tmp_path: Path, stream: Stream, receiver: Receiver
) -> None:
    expected = publish(stream, range(0, 50))
    inst = Instance(tmp_path, stream, receiver)
    old = 0
    try:
        old = one_reader(inst)
        check_delivered(inst, receiver, expected)
        os.kill(old, signal.SIGSTOP)  # alive, but answers nothing
        expected |= publish(stream, range(50, 100))
        wait_until("the hung reader replaced", lambda: inst.events("nats_reader_failed"), 60, inst)
        failed = inst.events("nats_reader_failed")
        assert len(failed) == 1 and failed[0]["pid"] == old
        # the bound it was held to: the take's own wait (a share of the 0.1 s poll
        # interval) + 5 s
        reason = failed[0]["reason"]
        assert reason.startswith("no answer within ") and reason.endswith(" s"), reason
        assert 5.0 < float(reason.split()[3]) <= 5.1
        check_delivered(inst, receiver, expected)
        assert old not in inst.readers()  # killed and reaped, not left stopped
        assert inst.metric("alert_service_nats_reader_restarts_total") == 1
    finally:
        if old and Path(f"/proc/{old}").exists():
            os.kill(old, signal.SIGCONT)
        code = inst.stop()
    assert code == 0, inst.tail()


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("garbage", "reason"),
    [
        (b"garbled!\n", "garbled frame: length 1734439522 over the limit"),
        (b"\x00\x00\x00\x05hello", "garbled frame: "),
    ],
    ids=["huge-length", "bad-batch"],
)
def test_a_garbled_frame_is_a_clear_error_and_the_reader_is_replaced(
    tmp_path: Path, stream: Stream, receiver: Receiver, garbage: bytes, reason: str
) -> None:
    expected = publish(stream, range(0, 50))
    inst = Instance(tmp_path, stream, receiver)
    try:
        old = one_reader(inst)
        check_delivered(inst, receiver, expected)  # idle now: answers are small
        with answer_pipe(old).open("wb") as pipe:  # the same pipe, opened again
            pipe.write(garbage)
        expected |= publish(stream, range(50, 100))
        wait_until("the reader replaced", lambda: inst.events("nats_reader_failed"), 60, inst)
        failed = inst.events("nats_reader_failed")
        assert len(failed) == 1 and failed[0]["pid"] == old
        assert failed[0]["reason"].startswith(reason), failed[0]["reason"]
        check_delivered(inst, receiver, expected)
        assert old not in inst.readers()
        assert inst.metric("alert_service_nats_reader_restarts_total") == 1
    finally:
        code = inst.stop()
    assert code == 0, inst.tail()


def test_health_shows_a_failed_reader_until_it_is_replaced_with_backoff(
    tmp_path: Path, stream: Stream
) -> None:
    """In process: ``source_problems`` (``/health``) while the reader is down, the
    counter, and a pause that doubles when the new reader fails again soon."""
    state = open_state(tmp_path / "state" / "state.sqlite3")
    stats = Stats()
    pipeline = Pipeline(make_config(tmp_path, stream), stats=stats, state=state)
    name = f"nats:{stream.name}/alerts"
    pauses: list[str] = []
    try:
        for round_ in range(2):
            stream.publish(f"h{round_}", ioc_line(f"h{round_}", IOC, 443, local=round_))
            for _ in range(200):
                time.sleep(min(pipeline.poll_once(), 0.05))
                if stats.lines_read == round_ + 1 and name not in stats.source_problems:
                    break
            assert stats.lines_read == round_ + 1
            readers = reader_children(os.getpid())
            assert len(readers) == 1
            os.kill(readers[0], signal.SIGKILL)
            time.sleep(0.2)
            pipeline.poll_once()
            problem = stats.source_problems.get(name, "")
            assert problem.startswith("nats reader failed: exited (signal 9)"), problem
            pauses.append(problem.rsplit("restarting in ", 1)[-1])
            assert stats.nats_reader_restarts == round_ + 1
        assert pauses == ["0.5 s", "1.0 s"]  # failed again soon after its start
        stream.publish("h9", ioc_line("h9", IOC, 443, local=9))
        for _ in range(200):
            time.sleep(min(pipeline.poll_once(), 0.05))
            if stats.lines_read == 3:
                break
        assert stats.lines_read == 3
        assert name not in stats.source_problems  # shown only while it lasts
    finally:
        pipeline.close()
        state.close()
