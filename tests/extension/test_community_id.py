"""Our Community ID equals the reference library's on random flows."""

from __future__ import annotations

import communityid
from hypothesis import given, settings
from hypothesis import strategies as st

from extension.enrich.flow import community_id
from extension.model import SocketRecord

_REFERENCE = communityid.CommunityID()

_v4 = st.ip_addresses(v=4).map(str)
_v6 = st.ip_addresses(v=6).filter(lambda a: a.ipv4_mapped is None).map(str)
_port = st.integers(min_value=0, max_value=65535)


def _reference(record: SocketRecord) -> str:
    flow = communityid.FlowTuple(
        record.protocol,
        record.local_address,
        record.remote_address,
        record.local_port,
        record.remote_port,
    )
    return str(_REFERENCE.calc(flow))


@settings(max_examples=400, deadline=None)  # a busy host must not fail it
@given(
    family=st.sampled_from([2, 10]),
    data=st.data(),
    protocol=st.sampled_from([6, 17]),
    local_port=_port,
    remote_port=_port,
)
def test_equals_the_communityid_library(
    family: int, data: st.DataObject, protocol: int, local_port: int, remote_port: int
) -> None:
    addresses = _v4 if family == 2 else _v6
    local = data.draw(addresses)
    remote = data.draw(st.one_of(addresses, st.just(local)))  # equal addresses: ports order
    record = SocketRecord(None, family, protocol, local, local_port, remote, remote_port, "")
    assert community_id(record) == _reference(record)


def test_known_value_and_symmetry() -> None:
    # The specification's own example flow, TCP 128.232.110.120:34855 -> 66.35.250.204:80.
    out = SocketRecord(None, 2, 6, "128.232.110.120", 34855, "66.35.250.204", 80, "")
    back = SocketRecord(None, 2, 6, "66.35.250.204", 80, "128.232.110.120", 34855, "")
    assert community_id(out) == community_id(back) == "1:LQU9qZlK+B5F3KDmev6m5PMibrg="


def test_no_remote_end_or_other_protocol_has_none() -> None:
    assert community_id(SocketRecord(None, 2, 6, "10.0.0.1", 80, "", 0, "LISTEN")) is None
    assert community_id(SocketRecord(None, 2, 1, "10.0.0.1", 0, "10.0.0.2", 0, "")) is None
