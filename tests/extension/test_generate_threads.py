"""Replies made on server threads while the sampler merges samples: a reply is made
under the sampler's lock and sent after it is let go, so nothing it holds may change
afterwards, and each reply is a consistent table."""

from __future__ import annotations

import threading
import time

from extension.collect.base import Collector
from extension.model import SocketRecord
from extension.sampler import Sampler
from extension.serve.reply import EncodedRows
from extension.serve.table import TrackedConnectionsTable

LIVE = 300
"""Sockets open at a time; a sample closes a tenth of them and opens as many."""


def socket_of(inode: int, state: str = "ESTABLISHED") -> SocketRecord:
    """The socket of ``inode``: its addresses and ports follow from the inode."""
    return SocketRecord(pid=None, family=2, protocol=6, local_address="10.0.0.5",
                        local_port=1024 + inode % 60000, remote_address=f"192.0.2.{inode % 250}",
                        remote_port=443, state=state, socket=inode, net_namespace=1)  # fmt: skip


class Churn(Collector):
    """Sockets that come and go, and change state, on every collect."""

    def __init__(self) -> None:
        self.first = 1
        self.calls = 0

    def collect(self) -> list[SocketRecord]:
        self.calls += 1
        if self.calls % 2:
            self.first += LIVE // 10
        state = "ESTABLISHED" if self.calls % 3 else "CLOSE_WAIT"
        return [socket_of(i, state if i % 2 else "ESTABLISHED")
                for i in range(self.first, self.first + LIVE)]  # fmt: skip


def test_replies_made_while_samples_merge_stay_as_made_and_whole() -> None:
    clock = [1000.0]
    sampler = Sampler(Churn(), clock=lambda: clock[0], linger_secs=1.0, attempt_grace_secs=0)
    table = TrackedConnectionsTable(sampler)
    stop = threading.Event()
    failures: list[str] = []
    replies = [0]

    def sample() -> None:
        while not stop.is_set():
            clock[0] += 0.25
            sampler.sample_once()

    def query(stable_only: bool) -> None:
        context = {"colsUsed": ["socket", "local_port"] if stable_only else ["state", "socket"]}
        while not stop.is_set():
            reply = table.generate(context)
            assert isinstance(reply, EncodedRows)
            sent = reply.reply(1)
            time.sleep(0.001)  # the sampler goes on meanwhile
            rows = reply.rows()
            replies[0] += 1
            problems = []
            if reply.reply(1) != sent:
                problems.append("the reply changed after it was made")
            if len(rows) != reply.row_count or len({r["socket"] for r in rows}) != len(rows):
                problems.append(f"{len(rows)} rows, {reply.row_count} counted, some twice")
            for row in rows:
                record = socket_of(int(row["socket"]))
                ports = (row["local_port"], row["remote_address"])
                if ports != (str(record.local_port), record.remote_address):
                    problems.append(f"row of another socket: {row}")
                if ("state" in row) == stable_only:
                    problems.append(f"columns not asked for, or missing: {sorted(row)}")
            failures.extend(problems[:3])

    threads = [threading.Thread(target=sample)]
    threads += [threading.Thread(target=query, args=(flag,)) for flag in (True, False, True)]
    for thread in threads:
        thread.start()
    time.sleep(4.0)
    stop.set()
    for thread in threads:
        thread.join(10)
    assert not failures, failures[:5]
    assert replies[0] > 20 and sampler.stats().samples_taken > 20
