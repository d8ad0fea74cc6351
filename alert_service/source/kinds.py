"""The kinds of source: how a ``sources`` item is read and what follows it.

One :class:`SourceKind` per kind, in :data:`SOURCE_KINDS`: the results-log file
(``path:`` or ``glob:``, :class:`~alert_service.source.FileSources`) and the NATS
JetStream stream (``nats:``, :class:`~alert_service.source.nats.NatsSources`).
A new kind (a message stream, say) is a class with the
:class:`~alert_service.source.SourceSet` methods and a config type with
``from_config``, in a module of its own, plus one entry here and its form of a
``sources`` item in schema/config.schema.json; docs/architecture.md has the recipe.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from alert_service.source.config import SourceConfig
from alert_service.source.manager import CheckpointStore, FileSources, SourceSet
from alert_service.source.nats_config import NatsSourceConfig, nats_problems
from alert_service.stats import Stats

__all__ = [
    "SOURCE_KINDS",
    "AnySourceConfig",
    "SourceKind",
    "build_sources",
    "source_config",
    "source_problems",
]

AnySourceConfig = SourceConfig | NatsSourceConfig
"""The config type of any kind of source."""


@dataclass(frozen=True, slots=True)
class SourceKind:
    """One kind of source.

    Attributes:
        accepts: True for a ``sources`` item of this kind.
        problems: what a schema cannot say about an item of this kind (messages).
        config: a validated item → its config; the config has a ``path`` naming the
            source in logs and ``/health``.
        config_type: the config class, to pick this kind's configs.
        build: this kind's configs, the checkpoint store, the stats, the wall and
            monotonic clocks, the bytes read per poll and the state connection → the
            set that follows them.
    """

    accepts: Callable[[Mapping[str, Any]], bool]
    problems: Callable[[Mapping[str, Any]], list[str]]
    config: Callable[[Mapping[str, Any]], AnySourceConfig]
    config_type: type
    build: Callable[..., SourceSet]


def _file_sources(
    configs: Sequence[SourceConfig],
    checkpoints: CheckpointStore,
    stats: Stats,
    *,
    clock: Callable[[], float],
    monotonic: Callable[[], float],
    max_read_bytes_per_poll: int,
    state: object = None,
) -> SourceSet:
    return FileSources(
        configs,
        checkpoints,
        stats,
        clock=clock,
        monotonic=monotonic,
        max_read_bytes_per_poll=max_read_bytes_per_poll,
    )


def _nats_sources(
    configs: Sequence[NatsSourceConfig],
    checkpoints: CheckpointStore,
    stats: Stats,
    *,
    clock: Callable[[], float],
    monotonic: Callable[[], float],
    max_read_bytes_per_poll: int,
    state: object = None,
) -> SourceSet:
    # Imported here: the NATS client is loaded only when a stream is configured.
    from alert_service.source.nats import NatsSources, partition_leases  # noqa: PLC0415

    settings = [(c.nats, c.poll_interval_secs) for c in configs]
    return NatsSources(
        settings,
        checkpoints,
        stats,
        leases=partition_leases(state, [s for s, _ in settings]),
        clock=clock,
        monotonic=monotonic,
    )


def _file_problems(raw: Mapping[str, Any]) -> list[str]:
    if "nats" in raw:
        return ["give exactly one of path, glob or nats"]
    return ["give exactly one of path or glob"] if "path" in raw and "glob" in raw else []


SOURCE_KINDS: tuple[SourceKind, ...] = (
    SourceKind(
        accepts=lambda raw: "path" in raw or "glob" in raw,
        problems=_file_problems,
        config=SourceConfig.from_config,
        config_type=SourceConfig,
        build=_file_sources,
    ),
    SourceKind(
        accepts=lambda raw: "nats" in raw,
        problems=nats_problems,
        config=NatsSourceConfig.from_config,
        config_type=NatsSourceConfig,
        build=_nats_sources,
    ),
)
"""Every kind of source; the first that accepts an item reads it."""


def source_problems(raw: Mapping[str, Any]) -> list[str]:
    """What is wrong with one ``sources`` item beyond its schema (empty when fine)."""
    for kind in SOURCE_KINDS:
        if kind.accepts(raw):
            return kind.problems(raw)
    return ["give exactly one of path or glob"]


def source_config(raw: Mapping[str, Any]) -> AnySourceConfig:
    """The config of one validated ``sources`` item (files when no kind claims it)."""
    for kind in SOURCE_KINDS:
        if kind.accepts(raw):
            return kind.config(raw)
    return SourceConfig.from_config(raw)


def build_sources(
    configs: Sequence[AnySourceConfig],
    checkpoints: CheckpointStore,
    stats: Stats,
    *,
    clock: Callable[[], float] = time.time,
    monotonic: Callable[[], float] = time.monotonic,
    max_read_bytes_per_poll: int = 8 * 1024 * 1024,
    state: object = None,
) -> list[SourceSet]:
    """One :class:`~alert_service.source.SourceSet` per kind that has configs, in
    :data:`SOURCE_KINDS` order (files always, so their gauges are kept).

    ``state`` is the state connection; a partitioned stream source takes its leases
    there when it is PostgreSQL."""
    sets: list[SourceSet] = []
    for kind in SOURCE_KINDS:
        mine = [c for c in configs if isinstance(c, kind.config_type)]
        if mine or kind is SOURCE_KINDS[0]:
            sets.append(
                kind.build(
                    mine,
                    checkpoints,
                    stats,
                    clock=clock,
                    monotonic=monotonic,
                    max_read_bytes_per_poll=max_read_bytes_per_poll,
                    state=state,
                )
            )
    return sets
