"""The kernel event rings' default size: the computation, and the rings the kernel maps.

The default is sized from a measured need (DEFAULT_RING_KIB's docstring,
benchmarks/events_loss_bench.py) and bounded across CPUs, because each
CPU's ring is memory the kernel allocates and the extension maps. The
mapping test needs root and tracefs; it skips with the reason elsewhere.
"""

from __future__ import annotations

import mmap

from hypothesis import given
from hypothesis import strategies as st

from extension.collect.linux_events import (
    DEFAULT_RING_KIB,
    MAX_RINGS_KIB,
    MIN_RING_KIB,
    EventsUnavailableError,
    LinuxEventSource,
    default_ring_kib,
)
from extension.collect.perf import online_cpus
from extension.enrich.process import ProcessTracker
from tests.helpers.privileges import require


def test_default_ring_by_cpu_count() -> None:
    assert [default_ring_kib(n) for n in (1, 2, 8)] == [4096] * 3
    assert [default_ring_kib(n) for n in (9, 16)] == [2048] * 2
    assert [default_ring_kib(n) for n in (17, 24, 32)] == [1024] * 3
    assert [default_ring_kib(n) for n in (33, 64, 256, 4096)] == [512] * 4
    assert default_ring_kib(0) == 4096


@given(st.integers(min_value=1, max_value=8192))
def test_default_ring_is_the_largest_power_of_two_within_the_bounds(cpus: int) -> None:
    kib = default_ring_kib(cpus)
    assert kib & (kib - 1) == 0
    assert MIN_RING_KIB <= kib <= DEFAULT_RING_KIB
    if kib > MIN_RING_KIB:
        assert kib * cpus <= MAX_RINGS_KIB, "bounded across CPUs"
    if kib < DEFAULT_RING_KIB:
        assert kib * 2 * cpus > MAX_RINGS_KIB, "no larger power of two would fit"


def _ring_bytes(source: LinuxEventSource) -> list[int]:
    return [ring.size for ring in source._rings]


def test_the_kernel_maps_the_default_ring_on_every_cpu_and_an_explicit_size_wins() -> None:
    expected_kib = default_ring_kib(len(online_cpus()))
    for ring_kib, kib in ((None, expected_kib), (8, 8)):
        source = LinuxEventSource(ProcessTracker(), ring_kib=ring_kib)
        try:
            source.start()
        except EventsUnavailableError as err:
            require(False, f"kernel events unavailable here: {err}")
        try:
            assert source.ring_kib == max(kib, mmap.PAGESIZE // 1024)
            assert _ring_bytes(source) == [source.ring_kib * 1024] * len(online_cpus())
        finally:
            source.stop()
