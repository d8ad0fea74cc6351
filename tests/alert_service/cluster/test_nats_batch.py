"""The packed batch (the reader process's answer) against the one-message reference."""

from __future__ import annotations

import gzip
from array import array

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from alert_service.source.nats_batch import (
    Message,
    ack_fields,
    message_encoding,
    message_lines,
    pack_batch,
    stream_chunk,
    taken_of,
    unpack_batch,
)
from alert_service.source.nats_payload import PayloadError
from alert_service.source.records import FileIdentity


def reply(seq: int, pending: int = 0, *, domain: bool = False) -> bytes:
    """An acknowledgement subject; with ``domain``, the 12-token form."""
    if domain:
        return f"$JS.ACK.hub.ACC.S.C.1.{seq}.{seq}.1756796709000000000.{pending}.r1".encode()
    return f"$JS.ACK.S.C.1.{seq}.{seq}.1756796709000000000.{pending}".encode()


def content_encoding(value: str | None) -> bytes | None:
    """Raw NATS headers carrying ``Content-Encoding: value`` (None: no headers)."""
    if value is None:
        return None
    return f"NATS/1.0\r\nX-Other: 1\r\ncontent-encoding: {value}\r\n\r\n".encode()


def reference(
    msgs: list[Message], after: int
) -> tuple[list[bytes], list[int], int, list[int], list[str]]:
    """One message at a time: lines, their sequences, skipped, undecodable sequences,
    their subjects."""
    lines: list[bytes] = []
    seqs: list[int] = []
    subjects: list[str] = []
    undecodable: list[int] = []
    skipped = 0
    highest = after
    for subject, msg_reply, headers, data in msgs:
        encoding = message_encoding(headers)
        seq = ack_fields(msg_reply)[0]
        if seq <= highest:  # committed, handed out, or earlier in this batch
            skipped += 1
            continue
        highest = seq
        try:
            got = message_lines(data, encoding)
        except PayloadError:
            undecodable.append(seq)
            continue
        lines += got
        seqs += [seq] * len(got)
        subjects += [subject.decode()] * len(got)
    return lines, seqs, skipped, undecodable, subjects


payloads = st.lists(st.binary(max_size=30).filter(lambda b: b"\n" not in b), max_size=4).map(
    b"\n".join
) | st.binary(max_size=40)


one_line = st.binary(min_size=1, max_size=40).filter(lambda b: b"\n" not in b)


@st.composite
def batches(draw: st.DrawFn) -> tuple[list[Message], int]:
    """A batch and the committed sequence. About half are mostly plain (the whole-batch
    path), each of those with at most one thing that sends it message by message."""
    count = draw(st.integers(0, 12))
    first = draw(st.integers(1, 50))
    plain = draw(st.booleans())
    odd = draw(st.integers(-1, count + 2)) if plain else -1  # the message made unusual
    msgs: list[Message] = []
    seqs = [first + n for n in range(count)]
    # a redelivery may come among newer messages (its ack_wait ran out meanwhile)
    for _ in range(draw(st.integers(0, 3)) if count and not plain else 0):
        seqs.insert(draw(st.integers(0, len(seqs))), draw(st.integers(1, first + count)))
    if plain and seqs and odd == count + 1:  # a sequence out of order, or repeated
        earlier = st.sampled_from(seqs[:-1]) if len(seqs) > 1 else st.nothing()
        seqs[-1] = draw(st.integers(1, seqs[-1]) | earlier)
    for n, seq in enumerate(seqs):
        usual = plain and n != odd
        data = draw(one_line if usual else payloads)
        encoding = None if usual else draw(
            st.sampled_from([None, None, "identity", "gzip", "zstd", "br"])
        )
        if encoding == "gzip" and draw(st.booleans()):
            data = gzip.compress(data)
        elif encoding == "zstd" and draw(st.booleans()):
            data = zstandard.ZstdCompressor().compress(data)
        subject = f"osquery.results.h{n}".encode()
        ack = reply(seq, len(seqs) - n - 1, domain=not usual and draw(st.booleans()))
        msgs.append((subject, ack, content_encoding(encoding), data))
    # redeliveries come first: the committed sequence may cover some of the batch
    after = draw(st.integers(0, first + count))
    if plain and odd != count + 2:
        after = draw(st.integers(0, first - 1))
    return msgs, after


@settings(max_examples=500, deadline=None)
@given(batches())
def test_a_packed_batch_holds_what_each_message_gives_one_by_one(
    batch: tuple[list[Message], int],
) -> None:
    msgs, after = batch
    lines, seqs, skipped, undecodable, subjects = reference(msgs, after)
    packed, last = pack_batch(msgs, after)
    taken = unpack_batch(packed)
    assert taken.lines == lines
    got = array("q")
    got.frombytes(taken.sequences)
    assert list(got) == seqs
    assert taken.skipped == skipped
    assert [u[0] for u in taken.undecodable] == undecodable
    assert taken.messages == len(msgs)
    assert last == max([after, *(ack_fields(m[1])[0] for m in msgs)])
    if msgs:
        assert taken.last == last
        assert (taken.pending, taken.reply) == (ack_fields(msgs[-1][1])[1], msgs[-1][1].decode())
    chunk = stream_chunk(FileIdentity(0, 0), "s", taken)
    if lines:
        assert chunk is not None and chunk.start == seqs[0]
        # log offsets of lines 1.. are their messages' stream sequences
        assert chunk.ends()[:-1] == seqs[1:]
        # each line is logged with its own message's subject and sequence
        where = [chunk.location(i) for i in range(len(lines))]
        assert [(w["subject"], w["stream_sequence"]) for w in where] == list(
            zip(subjects, seqs, strict=True)
        )
    else:
        assert chunk is None


@settings(max_examples=300, deadline=None)
@given(batches())
def test_a_batch_taken_without_packing_is_the_packed_one_unpacked(
    batch: tuple[list[Message], int],
) -> None:
    msgs, after = batch
    packed, packed_last = pack_batch(msgs, after)
    taken, last = taken_of(msgs, after)
    assert last == packed_last
    assert taken == unpack_batch(packed)


def test_ack_subjects_with_and_without_domain() -> None:
    assert ack_fields(b"$JS.ACK.ORDERS.c1.1.120.7.1756796709000000000.33") == (120, 33)
    assert ack_fields(b"$JS.ACK.hub.ACCHASH.ORDERS.c1.1.120.7.1756796709000000000.33.x1") == (
        120,
        33,
    )
    with pytest.raises(ValueError, match="not a JetStream ack subject"):
        ack_fields(b"_INBOX.abc")


def test_a_message_with_a_foreign_ack_subject_fails_the_batch() -> None:
    with pytest.raises(ValueError, match="not a JetStream ack subject"):
        pack_batch([(b"s", b"_INBOX.abc", None, b"x")], 0)
