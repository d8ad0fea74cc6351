"""Run the extension with its kernel-event reader timed (for events_loss_bench.py).

Usage (as the osqueryd stand-in launches an extension)::

    python benchmarks/events_reader_probe.py PROBE_FILE [extension options...]

Runs ``extension.cli.main`` with the rest of the arguments, after wrapping
:meth:`extension.collect.linux_events.LinuxEventSource.read` and
:meth:`extension.collect.perf.Ring.read`. Once a second it rewrites
``PROBE_FILE`` with one JSON object: ``reads`` (calls), ``max_gap_ms`` (the
longest time between two drains of the same ring, the time it went
undrained), ``gaps_over_ms`` (how many such gaps exceeded 100, 250, 500 and
1000 ms),
``max_read_ms`` (the longest read, decode included), ``read_ms`` (all reads),
``bytes`` (ring bytes read, all CPUs), ``max_ring_bytes`` (the most one
ring held at one read), and for the gaps over 250 ms: ``long_gaps`` (how
many overlapped a sample, else a ``generate`` call with its reply, else a
garbage collection, else none of these), ``max_gc_ms`` (the longest
collection of each generation),
``long_gap_ms`` (their total) and ``long_gap_reader_cpu_ms`` (the reader
thread's CPU time within them: the rest it spent waiting for the GIL or a
CPU). Figures since the start; the bench takes differences.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from extension import sampler as sampler_module
from extension.cli import main
from extension.collect import linux_events, perf
from extension.model import FlowEvent
from extension.serve import reply

_THRESHOLDS_MS = (100, 250, 500, 1000)


def install(path: str) -> None:
    """Wrap the reader and the ring, and start the thread writing ``path``."""
    figures: dict[str, Any] = {
        "reads": 0,
        "max_gap_ms": 0.0,
        "gaps_over_ms": {str(t): 0 for t in _THRESHOLDS_MS},
        "max_read_ms": 0.0,
        "read_ms": 0.0,
        "bytes": 0,
        "max_ring_bytes": 0,
        "long_gaps": {"sample": 0, "generate": 0, "gc": 0, "neither": 0},
        "max_gc_ms": {"0": 0.0, "1": 0.0, "2": 0.0},
        "long_gap_ms": 0.0,
        "long_gap_reader_cpu_ms": 0.0,
    }
    last: dict[int, tuple[float, float, int, int, int]] = {}
    # begun and running: samples, generates (the call and its reply), collections
    busy = [0, 0, 0, 0, 0, 0]
    gc_started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            busy[4] += 1
            busy[5] += 1
            gc_started[0] = time.monotonic()
        else:
            busy[5] -= 1
            key = str(info["generation"])
            spent_ms = (time.monotonic() - gc_started[0]) * 1000.0
            figures["max_gc_ms"][key] = max(figures["max_gc_ms"][key], spent_ms)

    gc.callbacks.append(on_gc)

    def counted(method: Any, index: int) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            busy[index] += 1
            busy[index + 1] += 1
            try:
                return method(*args, **kwargs)
            finally:
                busy[index + 1] -= 1

        return wrapper

    sampler_module.Sampler.sample_once = counted(  # type: ignore[method-assign]
        sampler_module.Sampler.sample_once, 0
    )
    for name in ("rows", "encoded_rows"):
        setattr(sampler_module.Sampler, name, counted(getattr(sampler_module.Sampler, name), 2))
    reply.ReplyProcessor._process_call = counted(  # type: ignore[method-assign]
        reply.ReplyProcessor._process_call, 2
    )
    source_read = linux_events.LinuxEventSource.read
    ring_read = perf.Ring.read

    def timed_read(self: linux_events.LinuxEventSource) -> list[FlowEvent]:
        started = time.monotonic()
        result = source_read(self)
        spent_ms = (time.monotonic() - started) * 1000.0
        figures["reads"] += 1
        figures["read_ms"] += spent_ms
        figures["max_read_ms"] = max(figures["max_read_ms"], spent_ms)
        return result

    def counted_read(self: perf.Ring) -> bytes:
        now, cpu = time.monotonic(), time.thread_time()
        previous = last.get(id(self))
        last[id(self)] = (now, cpu, busy[0] + busy[1], busy[2] + busy[3], busy[4] + busy[5])
        if previous is not None:
            gap_ms = (now - previous[0]) * 1000.0
            if gap_ms > 250:
                figures["long_gap_ms"] += gap_ms
                figures["long_gap_reader_cpu_ms"] += (cpu - previous[1]) * 1000.0
                if busy[0] + busy[1] != previous[2]:
                    figures["long_gaps"]["sample"] += 1
                elif busy[2] + busy[3] != previous[3]:
                    figures["long_gaps"]["generate"] += 1
                elif busy[4] + busy[5] != previous[4]:
                    figures["long_gaps"]["gc"] += 1
                else:
                    figures["long_gaps"]["neither"] += 1
            figures["max_gap_ms"] = max(figures["max_gap_ms"], gap_ms)
            for t in _THRESHOLDS_MS:
                if gap_ms > t:
                    figures["gaps_over_ms"][str(t)] += 1
        data = ring_read(self)
        figures["bytes"] += len(data)
        figures["max_ring_bytes"] = max(figures["max_ring_bytes"], len(data))
        return data

    linux_events.LinuxEventSource.read = timed_read  # type: ignore[method-assign]
    perf.Ring.read = counted_read  # type: ignore[method-assign]

    def write() -> None:
        while True:
            time.sleep(1.0)
            tmp = f"{path}.tmp"
            Path(tmp).write_text(json.dumps(figures))
            os.replace(tmp, path)

    threading.Thread(target=write, name="probe", daemon=True).start()


if __name__ == "__main__":
    install(sys.argv[1])
    sys.argv = [sys.argv[0], *sys.argv[2:]]
    sys.exit(main())
