"""A batch of stream messages as one byte string, and back (the reader process's reply).

The reader process (:mod:`alert_service.source.nats_reader`) decodes the messages it
pulled and sends the pipeline one byte string per batch, so that the pipeline's
thread spends no time per message: it splits one buffer into lines
(:func:`unpack_batch`). Layout of :func:`pack_batch`'s result:

* 4 bytes, big-endian: the length H of the header;
* H bytes: the header, JSON (``messages``, ``skipped``, ``last``, ``pending``,
  ``reply``, ``undecodable``, ``lines``, ``subject_bytes``);
* 8 bytes per line: the stream sequence of the message each line came from
  (signed 64-bit, native byte order: both ends are this machine);
* ``subject_bytes`` bytes: the subject of the message each line came from, one per
  line, joined by ``\\n`` (a NATS subject holds no whitespace: the protocol's
  ``MSG`` line separates its fields by it); split only when a line is logged;
* the lines, joined by ``\\n``.

:func:`message_lines` is the simple reference: what each message contributes, one
message at a time (the property test checks the two agree).
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import repeat

from alert_service.source.nats_bulk import Delivered, header_value
from alert_service.source.nats_payload import PayloadError, decode_payload
from alert_service.source.records import FileIdentity, LineChunk

__all__ = [
    "SUBJECT_LOG_CHARS",
    "Message",
    "StreamChunk",
    "Taken",
    "ack_fields",
    "message_encoding",
    "message_lines",
    "pack_batch",
    "pack_parts",
    "taken_of",
    "unpack_batch",
]

SUBJECT_LOG_CHARS = 200
"""Longest subject text in a log event, characters (a publisher chooses subjects: they
are escaped and cut, :func:`~alert_service.notify.literal.fit`)."""

Message = Delivered
"""One delivered message: ``(subject, reply subject, raw headers or None, payload)``
(as :class:`~alert_service.source.nats_bulk.BulkParser` hands it over)."""


def ack_fields(reply: bytes) -> tuple[int, int]:
    """``(stream sequence, messages pending)`` from a JetStream message's reply subject.

    ``$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.
    <pending>`` (9 tokens), or with domain and account hash after ``$JS.ACK`` and a
    random token at the end (12 tokens; nats-server ``server/jetstream.go``
    ``jsAckPre``/``ackReplyT`` v2.10, nats-py ``Msg.Metadata._get_metadata_fields``).

    Raises:
        ValueError: not a JetStream acknowledgement subject.
    """
    tokens = reply.split(b".")
    if len(tokens) == 9 and tokens[1] == b"ACK":
        return int(tokens[5]), int(tokens[8])
    if len(tokens) >= 11 and tokens[1] == b"ACK":
        return int(tokens[7]), int(tokens[10])
    raise ValueError(f"not a JetStream ack subject: {reply!r}")


def message_encoding(headers: bytes | None) -> str | None:
    """The ``Content-Encoding`` header of raw NATS headers; None without it."""
    return header_value(headers, b"content-encoding") if headers is not None else None


def message_lines(data: bytes, encoding: str | None) -> list[bytes]:
    """The result lines of one payload: decoded, split at ``\\n``, without a final
    empty line.

    Raises:
        PayloadError: the payload cannot be decoded.
    """
    data = decode_payload(data, encoding)
    lines = data.split(b"\n") if b"\n" in data else [data]
    if lines and not lines[-1]:
        lines.pop()
    return lines


def pack_batch(msgs: Sequence[Message], after: int) -> tuple[bytes, int]:
    """:func:`pack_parts` joined into one byte string."""
    parts, last = pack_parts(msgs, after)
    return b"".join(parts), last


def pack_parts(msgs: Sequence[Message], after: int) -> tuple[list[bytes], int]:
    """Pack delivered messages for the pipeline, as the parts of the packed batch (to
    be written one after the other, without joining them first).

    Args:
        msgs: the messages in delivery order.
        after: as for :func:`taken_of`.

    Returns:
        ``(parts, last)``: the packed batch in parts, and the highest stream
        sequence now handed out (``after`` when no message is above it).

    Raises:
        ValueError: a reply subject is not a JetStream acknowledgement subject.
    """
    taken, body, last = _collect(msgs, after)
    return _packed(taken, body), last


def taken_of(msgs: Sequence[Message], after: int) -> tuple[Taken, int]:
    """Delivered messages as the pipeline receives them, without packing (for reading
    in the pipeline's own thread, as ``benchmarks/nats_inline_probe.py`` measures it);
    the same batch as ``unpack_batch(pack_batch(msgs, after)[0])`` (property test).

    Most batches are new messages of one plain line each, in increasing stream
    sequence; those are taken by :func:`_collect_plain` with a few whole-batch
    operations, each payload being its line as it is. Any other batch goes message
    by message (:func:`_collect_each`); the two agree (property test).

    Args:
        msgs: the messages in delivery order.
        after: the highest stream sequence already committed or handed out; a message
            not above it, nor above every earlier message of ``msgs``, is a
            redelivery (a stream delivers new messages in increasing sequence),
            counted as ``skipped`` and left out.

    Returns:
        ``(taken, last)``: the batch, and the highest stream sequence now handed out
        (``after`` when no message is above it).

    Raises:
        ValueError: a reply subject is not a JetStream acknowledgement subject.
    """
    taken, _, last = _collect(msgs, after)
    return taken, last


def _collect(msgs: Sequence[Message], after: int) -> tuple[Taken, bytes | None, int]:
    """``(taken, body, last)``: :func:`taken_of`'s batch, and its lines joined by
    ``\n`` when that was done on the way (None otherwise)."""
    if msgs:
        plain = _collect_plain(msgs, after)
        if plain is not None:
            return plain
    return _collect_each(msgs, after)


def _collect_plain(msgs: Sequence[Message], after: int) -> tuple[Taken, bytes, int] | None:
    """:func:`_collect` of a batch whose messages have no headers, one non-empty
    line each, 9-token reply subjects and increasing stream sequences above
    ``after``; None for any other batch."""
    count = len(msgs)
    if [m[2] for m in msgs].count(None) != count:
        return None
    replies = [m[1] for m in msgs]
    if list(map(bytes.count, replies, repeat(b"."))).count(8) != count:
        return None  # not all of the 9-token form
    tokens = b".".join(replies).split(b".")
    if tokens[0::9].count(b"$JS") != count or tokens[1::9].count(b"ACK") != count:
        return None
    seqs = array("q", map(int, tokens[5::9]))
    if seqs[0] <= after or list(seqs) != sorted(set(seqs)):
        return None
    payloads = [m[3] for m in msgs]
    body = b"\n".join(payloads)
    if body.count(b"\n") != count - 1 or b"" in payloads:
        return None
    last = seqs[-1]
    taken = Taken(
        messages=count,
        last=last,
        pending=int(tokens[-1]),
        reply=replies[-1].decode(errors="replace"),
        lines=payloads,
        sequences=seqs.tobytes(),
        subjects=b"\n".join([m[0] for m in msgs]),
    )
    return taken, body, last


def _collect_each(msgs: Sequence[Message], after: int) -> tuple[Taken, None, int]:
    """:func:`_collect`, one message at a time."""
    lines: list[bytes] = []
    subjects: list[bytes] = []
    seqs = array("q")
    undecodable: list[tuple[int, str, str]] = []
    skipped = 0
    last = pending = 0
    reply = b""
    if msgs:
        reply = msgs[-1][1]
        pending = ack_fields(reply)[1]
        for subject, msg_reply, headers, data in msgs:
            seq = ack_fields(msg_reply)[0]
            if seq <= after:
                skipped += 1
                continue
            after = seq
            try:
                got = message_lines(data, message_encoding(headers))
            except PayloadError as err:
                undecodable.append((seq, subject.decode(errors="replace"), str(err)))
                continue
            lines += got
            subjects += [subject] * len(got)
            seqs.extend([seq] * len(got))
        last = after
    taken = Taken(
        messages=len(msgs),
        skipped=skipped,
        last=last,
        pending=pending,
        reply=reply.decode(errors="replace"),
        undecodable=undecodable,
        lines=lines,
        sequences=seqs.tobytes(),
        subjects=b"\n".join(subjects),
    )
    return taken, None, after


def _packed(taken: Taken, body: bytes | None) -> list[bytes]:
    """The parts of :func:`pack_parts`'s layout for ``taken`` (``body``: its lines
    joined by ``\n``, when already joined)."""
    header = json.dumps(
        {
            "messages": taken.messages,
            "skipped": taken.skipped,
            "last": taken.last,
            "pending": taken.pending,
            "reply": taken.reply,
            "undecodable": taken.undecodable,
            "lines": len(taken.lines),
            "subject_bytes": len(taken.subjects),
        }
    ).encode()
    if body is None:
        body = b"\n".join(taken.lines)
    return [len(header).to_bytes(4, "big"), header, taken.sequences, taken.subjects, body]


@dataclass(slots=True)
class Taken:
    """A batch as the pipeline receives it (:func:`unpack_batch`).

    Attributes:
        messages: messages delivered (redeliveries included).
        skipped: redeliveries left out (not above the committed sequence).
        last: the highest stream sequence delivered; 0 when none.
        pending: messages left in the consumer after the last one.
        reply: the last message's reply subject (``AckAll`` goes there); empty when none.
        undecodable: ``(stream sequence, subject, reason)`` per message left out.
        lines: the result lines, in stream order.
        sequences: the stream sequence of each line's message (``array('q')`` bytes).
        subjects: the subject of each line's message, joined by ``\\n``.
    """

    messages: int = 0
    skipped: int = 0
    last: int = 0
    pending: int = 0
    reply: str = ""
    undecodable: list[tuple[int, str, str]] = field(default_factory=list)
    lines: list[bytes] = field(default_factory=list)
    sequences: bytes = b""
    subjects: bytes = b""


def unpack_batch(payload: bytes | bytearray) -> Taken:
    """The inverse of :func:`pack_batch`.

    Raises:
        ValueError: the payload is not a packed batch.
    """
    size = int.from_bytes(payload[:4], "big")
    head = json.loads(payload[4 : 4 + size])
    count = int(head["lines"])
    subjects = 4 + size + 8 * count
    body = subjects + int(head["subject_bytes"])
    lines = bytes(memoryview(payload)[body:]).split(b"\n") if count else []
    if len(lines) != count:
        raise ValueError(f"packed batch: {len(lines)} lines, header says {count}")
    return Taken(
        messages=int(head["messages"]),
        skipped=int(head["skipped"]),
        last=int(head["last"]),
        pending=int(head["pending"]),
        reply=str(head["reply"]),
        undecodable=[(int(s), str(subj), str(r)) for s, subj, r in head["undecodable"]],
        lines=lines,
        sequences=bytes(payload[4 + size : subjects]),
        subjects=bytes(payload[subjects:body]),
    )


@dataclass(slots=True)
class StreamChunk(LineChunk):
    """Lines of a stream source: :attr:`start` is the first line's stream sequence,
    and a line is located by its message (:meth:`location`), not by a file offset.

    Attributes:
        sequences: ``array('q')`` bytes, one stream sequence per line.
        subjects: the subject of each line's message, joined by ``\\n``.
        stream: the JetStream stream's name.
        partition: the partition token of the consumer that read the lines; empty
            for a source that is not partitioned.
    """

    sequences: bytes = b""
    subjects: bytes = b""
    stream: str = ""
    partition: str = ""

    def location(self, index: int, skip: int = 0) -> dict[str, object]:
        """Where line ``index`` came from, for log events: ``subject`` (the message's
        own, escaped and cut to :data:`SUBJECT_LOG_CHARS`), ``stream``,
        ``stream_sequence`` and ``partition``; ``line_byte``, the byte of the line
        meant, when ``skip`` > 0 (bytes into the line)."""
        # Imported here: the reader process imports this module and never logs a line.
        from alert_service.notify.literal import fit  # noqa: PLC0415

        seqs = array("q")
        seqs.frombytes(self.sequences[8 * index : 8 * index + 8])
        subjects = self.subjects.split(b"\n") if self.subjects else []
        subject = subjects[index].decode(errors="replace") if index < len(subjects) else ""
        where: dict[str, object] = {
            "subject": fit(subject, SUBJECT_LOG_CHARS, "plain"),
            "stream": self.stream,
            "stream_sequence": seqs[0] if seqs else self.start,
            "partition": self.partition,
        }
        if skip:
            where["line_byte"] = skip
        return where

    def ends(self) -> list[int]:
        """Per line, the value the pipeline's log messages take for the *next* line's
        offset: the next line's stream sequence (the last one's plus one)."""
        seqs = array("q")
        seqs.frombytes(self.sequences)
        return [*seqs[1:], seqs[-1] + 1] if seqs else []


def stream_chunk(
    identity: FileIdentity, path: str, taken: Taken, stream: str = "", partition: str = ""
) -> StreamChunk | None:
    """One chunk of all of ``taken``'s lines, read from ``stream`` by the consumer of
    ``partition`` (empty: not partitioned); None when it has none."""
    if not taken.lines:
        return None
    seqs = array("q")
    seqs.frombytes(taken.sequences[:8])
    return StreamChunk(identity, path, seqs[0], taken.lines, sequences=taken.sequences,
                       subjects=taken.subjects, stream=stream, partition=partition)
