"""Rate limits shared by every instance: one token bucket per destination in PostgreSQL.

With the SQLite state one process delivers, and its
:class:`~alert_service.deliver.bucket.TokenBucket` (in memory) is the destination's
whole rate limit. With the PostgreSQL state N instances deliver from one outbox, so
N in-memory buckets would let a destination get up to N times its
``rate_limit_per_minute``. Here the bucket is a row of ``rate_buckets``::

    destination TEXT PRIMARY KEY,   -- the notifier name
    tokens DOUBLE PRECISION,        -- tokens left at updated_at (0 .. burst)
    updated_at DOUBLE PRECISION     -- Unix seconds of the last token taken

A token is taken by one ``UPDATE`` that computes the refill from the row it has
locked (``LEAST(burst, tokens + elapsed * rate)``) and takes a token only when the
result is at least 1: concurrent takers of any instance queue on the row lock and
each sees the row its predecessor left (PostgreSQL docs, "Concurrency Control",
13.2.1: an ``UPDATE`` in Read Committed re-evaluates its ``WHERE`` on the newest
version of a row it waited for). Times are the database server's clock
(``statement_timestamp()``), so the instances' clocks never have to agree.

The arithmetic is :class:`~alert_service.deliver.bucket.TokenBucket`'s (a property
test holds the two equal): tokens refill at ``rate_per_minute / 60`` per second up to
``burst``; a new row starts full.
"""

from __future__ import annotations

from alert_service.state.postgres import PgConnection

__all__ = ["SharedTokenBucket"]

_SERVER_NOW = "EXTRACT(EPOCH FROM statement_timestamp())"


class SharedTokenBucket:
    """The token bucket of one destination, in the shared state.

    Args:
        destination: the notifier name (the row's key).
        rate_per_minute: refill rate, tokens per minute (> 0).
        burst: bucket size, tokens (>= 1).

    Raises:
        ValueError: a non-positive rate or a burst below 1.
    """

    def __init__(self, destination: str, rate_per_minute: float, burst: int) -> None:
        if rate_per_minute <= 0 or burst < 1:
            raise ValueError(f"invalid rate limit {rate_per_minute}/min, burst {burst}")
        self.destination = destination
        self.rate_per_sec = rate_per_minute / 60.0
        self.burst = burst

    def take(self, conn: PgConnection, now: float | None = None) -> float:
        """Take a token if one is available.

        Args:
            conn: the state connection, outside a transaction (each statement
                commits by itself).
            now: Unix seconds to use instead of the server's clock (tests).

        Returns:
            0.0 when a token was taken, else the seconds until one is available.

        Raises:
            PgStateError: the statement failed.
        """
        clock = _SERVER_NOW if now is None else "CAST(? AS DOUBLE PRECISION)"
        at: tuple[float, ...] = () if now is None else (now,)
        level = "LEAST(?, b.tokens + GREATEST(0, n.t - b.updated_at) * ?)"
        limits = (float(self.burst), self.rate_per_sec)
        for _ in range(2):
            taken = conn.execute(
                f"UPDATE rate_buckets AS b SET tokens = {level} - 1,"
                " updated_at = GREATEST(b.updated_at, n.t)"
                f" FROM (SELECT {clock} AS t) AS n"
                f" WHERE b.destination = ? AND {level} >= 1 RETURNING b.tokens",
                (*limits, *at, self.destination, *limits),
            ).fetchone()
            if taken is not None:
                return 0.0
            row = conn.execute(
                f"SELECT {level} FROM rate_buckets AS b, (SELECT {clock} AS t) AS n"
                " WHERE b.destination = ?",
                (*limits, *at, self.destination),
            ).fetchone()
            if row is not None:
                return max(0.0, (1.0 - float(row[0])) / self.rate_per_sec)
            # First use of this destination: a full bucket, then take from it.
            conn.execute(
                f"INSERT INTO rate_buckets (destination, tokens, updated_at)"
                f" SELECT ?, ?, {clock} ON CONFLICT (destination) DO NOTHING",
                (self.destination, float(self.burst), *at),
            )
        return 1.0 / self.rate_per_sec  # unreachable unless the row keeps vanishing

    def give_back(self, conn: PgConnection) -> None:
        """Return a token taken for a send that did not happen (nothing was due)."""
        conn.execute(
            "UPDATE rate_buckets SET tokens = LEAST(?, tokens + 1) WHERE destination = ?",
            (float(self.burst), self.destination),
        )
