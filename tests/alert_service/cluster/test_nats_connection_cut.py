"""The reader's connection to NATS is cut while a batch is on its way: the messages
lost on the wire are read again, not skipped. Real NATS server, real pipeline, and
a TCP relay between the reader and the server that cuts the connection once."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from alert_service.pipeline import Pipeline
from alert_service.state import open_state
from alert_service.stats import Stats
from tests.alert_service.cluster.test_nats_source import (
    IOC,
    Stream,
    make_config,
    outbox,
    result_line,
)
from tests.helpers.services import need_nats


class CuttingRelay:
    """Relays TCP connections to ``host:port``; the first connection over which the
    server sends more than ``cut_after`` bytes is closed in the middle of a chunk
    (half of it forwarded, the rest dropped), as a broken network would."""

    def __init__(self, host: str, port: int, cut_after: int) -> None:
        self.target = (host, port)
        self.cut_after = cut_after
        self.cut = False
        self.port = 0
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None
        self._loop = asyncio.new_event_loop()
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self._thread.start()
        started.wait(10)

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._relay, "127.0.0.1", 0)
        )
        self._server = server
        self.port = server.sockets[0].getsockname()[1]
        started.set()
        self._loop.run_forever()
        server.close()
        for w in self._writers:
            w.close()
        tasks = asyncio.all_tasks(self._loop)
        for task in tasks:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self._loop.run_until_complete(server.wait_closed())
        self._loop.close()

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(*self.target)
        writers = [client_w, server_w]
        self._writers += writers
        await asyncio.gather(
            self._copy(client_r, server_w, writers, watch=False),
            self._copy(server_r, client_w, writers, watch=True),
        )

    async def _copy(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        writers: list[asyncio.StreamWriter],
        *,
        watch: bool,
    ) -> None:
        sent = 0
        try:
            while data := await reader.read(65536):
                if watch and not self.cut and sent + len(data) > self.cut_after:
                    self.cut = True
                    writer.write(data[: len(data) // 2])
                    await writer.drain()
                    break
                sent += len(data)
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        for w in writers:
            w.close()

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


@pytest.fixture
def stream() -> Iterator[Stream]:
    s = Stream(need_nats())
    yield s
    s.close()


def test_messages_lost_with_a_cut_connection_are_read_again(
    tmp_path: Path, stream: Stream
) -> None:
    count = 6000
    lines = [result_line(f"h{n}", IOC, 1000 + n % 50000) for n in range(count)]

    async def publish() -> None:
        for n, line in enumerate(lines):
            await stream.client.publish(f"{stream.prefix}.h{n}", line)
        await stream.client.flush()

    stream.loop.run_until_complete(publish())
    host, port = stream.url.removeprefix("nats://").rsplit(":", 1)
    relay = CuttingRelay(host, int(port), cut_after=200_000)
    relayed = Stream.__new__(Stream)
    relayed.url, relayed.name, relayed.prefix = (
        f"nats://127.0.0.1:{relay.port}",
        stream.name,
        stream.prefix,
    )
    config = make_config(tmp_path, relayed, batch_size=1000)  # ack_wait 60 s, the default
    conn = open_state(tmp_path / "state" / "state.sqlite3")
    stats = Stats()
    pipeline = Pipeline(config, stats=stats, state=conn)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            pipeline.poll_once()
            info = stream.consumer("alerts")
            if relay.cut and info.ack_floor.stream_seq == count and info.num_pending == 0:
                break
        assert relay.cut, "the relay never cut the connection"
        assert len(outbox(conn)) == count  # one alert per line, none lost
    finally:
        pipeline.close()
        conn.close()
        relay.close()
