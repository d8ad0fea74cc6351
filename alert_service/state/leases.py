"""Who owns which source partition: leases in the PostgreSQL state, with fencing.

Table ``leases`` (:mod:`alert_service.state.postgres`): one row per partition
(``name`` = the partition's source name) and one per live instance
(``member:<instance>``), each with its ``owner``, a ``token`` and ``expires_at``.
Times are the database server's clock (``clock_timestamp()``), so the instances'
clocks never have to agree.

* An instance announces itself (:meth:`PgLeases.heartbeat`) and counts the live
  members; it wants ``ceil(partitions / members)`` partitions. Each start of ``run``
  is a new instance name, so the same statement also deletes the memberships that
  ended more than :data:`MEMBER_PRUNE_AFTER_SECS` ago (partition leases are never
  deleted: their token must keep going up).
* It takes a free or expired partition (:meth:`PgLeases.acquire`): the token goes up
  by one at every change of owner — the fencing token.
* It renews what it owns every third of the lease time (:meth:`PgLeases.renew`); a
  lease it could not renew is lost, and its consumer is dropped.
* Every commit of a partition's batch locks its lease row and checks owner, token and
  expiry inside the same transaction (:meth:`PgLeases.fence`); an instance whose lease
  was taken over (it stalled longer than the lease) cannot commit — its transaction is
  rolled back (:class:`LeaseLostError`) and the new owner reads the messages again.
  A takeover waits for a commit holding the lease row's lock, so the two never
  interleave.

The same shape as Kafka's consumer-group generations and the fencing tokens of
lock services (M. Kleppmann, "How to do distributed locking", 2016).
"""

from __future__ import annotations

from dataclasses import dataclass

from alert_service.state.postgres import PgConnection, PgStateError

__all__ = [
    "MEMBER_PREFIX",
    "MEMBER_PRUNE_AFTER_SECS",
    "LeaseLostError",
    "LeaseRow",
    "PgLeases",
    "lease_rows",
]

_NOW = "EXTRACT(EPOCH FROM clock_timestamp())"
MEMBER_PREFIX = "member:"
"""Lease names of instances' memberships (``member:<instance>``)."""
_MEMBER = MEMBER_PREFIX
MEMBER_PRUNE_AFTER_SECS = 3600.0
"""A membership that ended (expired, or left at a clean stop) more than this many
seconds ago is deleted at the next heartbeat of any instance; until then ``status``
counts it as recently ended. An hour: far longer than any lease time, so an instance
that only stalled is never pruned while it could still come back, and short enough
that ``status`` shows the restarts of the last hour, not the cluster's history."""


class LeaseLostError(PgStateError):
    """A commit was refused: this instance no longer holds the partition's lease."""


@dataclass(frozen=True, slots=True)
class LeaseRow:
    """One row of ``leases`` (:meth:`PgLeases.rows`).

    Attributes:
        name: partition source name, or ``member:<instance>``.
        owner: the instance holding it.
        token: fencing token (goes up at each change of owner).
        expires_in_secs: seconds until it expires (negative: expired).
    """

    name: str
    owner: str
    token: int
    expires_in_secs: float


class PgLeases:
    """Leases of one instance, on its own PostgreSQL connection's autocommit statements.

    Args:
        conn: the state connection (statements run between the pipeline's
            transactions, in the pipeline's thread).
        instance: this instance's unique name.
        ttl_secs: lease time, seconds.
    """

    def __init__(self, conn: PgConnection, instance: str, ttl_secs: float) -> None:
        self.conn = conn
        self.instance = instance
        self.ttl_secs = ttl_secs

    def heartbeat(self) -> int:
        """Renew this instance's membership, delete the memberships that ended more than
        :data:`MEMBER_PRUNE_AFTER_SECS` ago; return the number of live members (>= 1)."""
        # SKIP LOCKED: instances pruning at the same time never wait for each other.
        self.conn.execute(
            "DELETE FROM leases WHERE name IN (SELECT name FROM leases"
            f" WHERE left(name, 7) = ? AND expires_at < {_NOW} - ? FOR UPDATE SKIP LOCKED)",
            (_MEMBER, MEMBER_PRUNE_AFTER_SECS),
        )
        self.conn.execute(
            "INSERT INTO leases (name, owner, token, expires_at)"
            f" VALUES (?, ?, 0, {_NOW} + ?) ON CONFLICT (name) DO UPDATE"
            " SET owner = excluded.owner, expires_at = excluded.expires_at",
            (_MEMBER + self.instance, self.instance, self.ttl_secs),
        )
        row = self.conn.execute(
            "SELECT COUNT(*) FROM leases WHERE left(name, 7) = ?"
            f" AND expires_at > {_NOW}",
            (_MEMBER,),
        ).fetchone()
        return max(1, int(row[0]))

    def leave(self) -> None:
        """End this instance's membership and leases now (a clean stop)."""
        self.conn.execute(
            f"UPDATE leases SET expires_at = LEAST(expires_at, {_NOW}) WHERE owner = ?",
            (self.instance,),
        )

    def acquire(self, name: str) -> int | None:
        """Take the lease of partition ``name`` when free or expired; return its token."""
        row = self.conn.execute(
            "INSERT INTO leases (name, owner, token, expires_at)"
            f" VALUES (?, ?, 1, {_NOW} + ?) ON CONFLICT (name) DO UPDATE"
            " SET owner = excluded.owner, token = leases.token + 1,"
            " expires_at = excluded.expires_at"
            f" WHERE leases.expires_at <= {_NOW} RETURNING token",
            (name, self.instance, self.ttl_secs),
        ).fetchone()
        return None if row is None else int(row[0])

    def renew(self, name: str, token: int) -> bool:
        """Extend the lease of ``name`` held with ``token``; False when it is lost."""
        cursor = self.conn.execute(
            f"UPDATE leases SET expires_at = {_NOW} + ?"
            f" WHERE name = ? AND owner = ? AND token = ? AND expires_at > {_NOW}",
            (self.ttl_secs, name, self.instance, token),
        )
        return cursor.rowcount == 1

    def release(self, name: str, token: int) -> None:
        """Give up the lease of ``name`` (another instance may take it at once)."""
        self.conn.execute(
            "UPDATE leases SET expires_at = 0 WHERE name = ? AND owner = ? AND token = ?",
            (name, self.instance, token),
        )

    def fence(self, conn: object, name: str, token: int) -> None:
        """Inside the commit's transaction: lock the lease row and check it is still ours.

        Raises:
            LeaseLostError: another instance holds it now, or it expired.
        """
        assert isinstance(conn, PgConnection)
        row = conn.execute(
            "SELECT owner, token, expires_at - " + _NOW + " FROM leases WHERE name = ?"
            " FOR UPDATE",
            (name,),
        ).fetchone()
        if row is None or row[0] != self.instance or int(row[1]) != token or row[2] <= 0:
            raise LeaseLostError(f"lease of {name} lost (token {token}; now {row!r})")

    def rows(self) -> list[LeaseRow]:
        """Every lease and member row (``status``)."""
        return lease_rows(self.conn)


def lease_rows(conn: PgConnection) -> list[LeaseRow]:
    """Every row of ``leases``, by name, with seconds until each expires."""
    cursor = conn.execute(
        f"SELECT name, owner, token, expires_at - {_NOW} FROM leases ORDER BY name"
    )
    return [LeaseRow(r[0], r[1], int(r[2]), float(r[3])) for r in cursor]
