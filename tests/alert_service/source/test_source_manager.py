"""The source stage's face to the pipeline: batches out, committed/failed back.

A real file, followed by :class:`FileSources` with an in-memory checkpoint store and
the fake clock: what a failed commit gives back is read again after the pause, what
was committed is not.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from alerts_support import FakeClock

from alert_service.source import Batch, FileSources, Position, SourceConfig
from alert_service.stats import Stats


class MemoryCheckpoints:
    def __init__(self) -> None:
        self.stored: dict[str, tuple[Position, float]] = {}
        self.expired_with: list[list[str]] = []

    def load(self, key: str) -> tuple[Position, float] | None:
        return self.stored.get(key)

    def expire(self, keep: Iterable[str], now: float) -> list[str]:
        self.expired_with.append(sorted(keep))
        return []


def lines(batches: list[Batch]) -> list[bytes]:
    return [line for batch in batches for chunk in batch.chunks for line in chunk.lines]


def test_a_failed_batch_is_read_again_after_the_pause_and_a_committed_one_is_not(
    tmp_path: Path,
) -> None:
    log = tmp_path / "osqueryd.results.log"
    log.write_bytes(b"one\ntwo\n")
    clock = FakeClock()
    checkpoints = MemoryCheckpoints()
    stats = Stats()
    sources = FileSources(
        [SourceConfig(str(log), start_at="beginning", poll_interval_secs=1.0)],
        checkpoints,
        stats,
        clock=clock,
        monotonic=clock.monotonic,
    )
    first = list(sources.poll())
    assert [b.key for b in first] == [str(log)]
    assert lines(first) == [b"one", b"two"]
    assert first[0].position is not None and first[0].position.offset == 8
    assert checkpoints.expired_with == [[str(log)]]

    (batch,) = first
    sources.failed(batch, OSError("disk full"))
    assert sources.pause() == 1.0  # the poll's pause; the file itself waits longer
    clock.advance(0.5)
    assert list(sources.poll()) == []  # still backing off (1 s after one failure)
    clock.advance(1.0)
    again = list(sources.poll())
    assert lines(again) == [b"one", b"two"]

    sources.committed(again[0])
    assert stats.source_last_line_time[str(log)] == clock.now
    clock.advance(1.0)
    assert list(sources.poll()) == []
    with open(log, "ab") as fh:
        fh.write(b"three\n")
    clock.advance(1.0)
    assert lines(list(sources.poll())) == [b"three"]
    assert stats.sources_followed == 1
    sources.close()


def test_a_stored_checkpoint_is_where_reading_resumes(tmp_path: Path) -> None:
    log = tmp_path / "osqueryd.results.log"
    log.write_bytes(b"old\n")
    clock = FakeClock()
    checkpoints = MemoryCheckpoints()
    config = SourceConfig(str(log), start_at="beginning")
    sources = FileSources([config], checkpoints, Stats(), clock=clock, monotonic=clock.monotonic)
    (batch,) = list(sources.poll())
    assert batch.position is not None
    sources.committed(batch)
    sources.close()
    checkpoints.stored[str(log)] = (batch.position, clock.now)
    with open(log, "ab") as fh:
        fh.write(b"new\n")
    resumed = FileSources([config], checkpoints, Stats(), clock=clock, monotonic=clock.monotonic)
    assert lines(list(resumed.poll())) == [b"new"]
    resumed.close()
