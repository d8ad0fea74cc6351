"""Which subjects of a stream no partition of a partitioned ``nats`` source reads.

A stream stores every message published on one of its subjects, whether or not a
consumer's filter matches it. With partitions, each consumer reads the subject
template with ``{partition}`` replaced by its token; a message on a stream subject
outside every partition's filter (a publisher computing the token with the wrong
case, say) is stored and never read, and no consumer counts it as pending. This
module compares the stream's configured subjects with the partition filters when a
partition binds; the source logs the result (``nats_subjects_unread``) and shows it
as a source problem.

Subject matching as NATS defines it (nats-server ``server/sublist.go``,
``subjectIsSubsetMatch``, v2.10): tokens are separated by ``.``; ``*`` matches one
token, ``>`` (last token only) one or more.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["covers", "unread_subjects"]


def covers(filter_subject: str, subject: str) -> bool:
    """Whether every subject that ``subject`` matches also matches ``filter_subject``.

    Args:
        filter_subject: a consumer's filter subject, wildcards allowed.
        subject: a stream's subject, wildcards allowed.

    Returns:
        True when ``subject``'s subjects are a subset of ``filter_subject``'s.
    """
    want = filter_subject.split(".")
    have = subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return i < len(have)  # ">" needs at least one token; it matches any
        if i >= len(have) or have[i] == ">":
            return False  # fewer tokens, or any number of them where one is wanted
        if token != "*" and token != have[i]:
            return False  # a literal: any other literal, or "*", is not covered
    return len(want) == len(have)


def unread_subjects(stream_subjects: Sequence[str], filters: Sequence[str]) -> list[str]:
    """The stream subjects no single filter covers, in the stream's order.

    Conservative: a stream subject covered only by several filters together (the
    stream's ``a.>`` by the filters ``a.*`` and ``a.*.>``) is listed too; partition
    filters, which differ in a literal token, never combine that way.

    Args:
        stream_subjects: the stream's configured subjects (``StreamConfig.subjects``).
        filters: the partitions' filter subjects.
    """
    return [s for s in stream_subjects if not any(covers(f, s) for f in filters)]
