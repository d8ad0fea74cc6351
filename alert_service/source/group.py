"""Several kinds of sources behind the one :class:`~alert_service.source.SourceSet` face."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from alert_service.source.manager import Batch, SourceSet

__all__ = ["SourceGroup"]


class SourceGroup:
    """Poll each member :class:`SourceSet` in turn; route outcomes to the one that
    yielded the batch.

    Args:
        members: the source sets (e.g. the files and the streams), polled in order.
    """

    def __init__(self, members: Sequence[SourceSet]) -> None:
        self._members = tuple(members)
        self._owner: dict[int, SourceSet] = {}

    def poll(self) -> Iterator[Batch]:
        """Yield every member's batches, one member after the other."""
        for member in self._members:
            for batch in member.poll():
                self._owner[id(batch)] = member
                yield batch

    def committed(self, batch: Batch) -> None:
        """Hand ``committed`` to the member that yielded ``batch``."""
        self._owner.pop(id(batch)).committed(batch)

    def failed(self, batch: Batch, error: Exception) -> None:
        """Hand ``failed`` to the member that yielded ``batch``."""
        self._owner.pop(id(batch)).failed(batch, error)

    def pause(self) -> float:
        """The shortest pause of the members."""
        return min((member.pause() for member in self._members), default=1.0)

    def close(self) -> None:
        """Close every member."""
        self._owner.clear()
        for member in self._members:
            member.close()
