"""Hypothesis strategies for IKEv2 headers and payloads (shared by codec and fuzz tests)."""

from __future__ import annotations

from hypothesis import strategies as st

from gateway.ikev2 import codec as c
from gateway.ikev2.constants import KNOWN_PAYLOADS

u8, u16, u32 = st.integers(0, 255), st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF)
spi8 = st.binary(min_size=8, max_size=8)

transforms = st.builds(c.Transform, st.integers(1, 5), u16, st.none() | u16)
proposals = st.builds(lambda n, p, spi, ts: c.Proposal(n, p, spi, tuple(ts)), u8, st.integers(1, 3),
                      st.sampled_from([b"", b"1234", b"12345678"]), st.lists(transforms, min_size=0, max_size=5))
selectors = st.one_of(
    st.builds(c.TrafficSelector, st.just(7), u8, u16, u16, st.binary(min_size=4, max_size=4),
              st.binary(min_size=4, max_size=4)),
    st.builds(c.TrafficSelector, st.just(8), u8, u16, u16, st.binary(min_size=16, max_size=16),
              st.binary(min_size=16, max_size=16)))


@st.composite
def deletes(draw: st.DrawFn) -> c.Delete:
    size = draw(st.sampled_from([0, 4, 8]))
    n = draw(st.integers(0, 4)) if size else 0
    return c.Delete(protocol=draw(u8), spi_size=size,
                    spis=tuple(draw(st.binary(min_size=size, max_size=size)) for _ in range(n)))


unknown_types = st.integers(1, 255).filter(lambda t: t not in KNOWN_PAYLOADS)
small = st.binary(max_size=64)
payloads = st.one_of(
    st.builds(lambda ps: c.SA(proposals=tuple(ps)), st.lists(proposals, min_size=1, max_size=3)),
    st.builds(lambda g, d: c.KE(group=g, data=d), u16, small),
    st.builds(lambda t, d, i: c.ID(id_type=t, data=d, initiator=i), u8, small, st.booleans()),
    st.builds(lambda e, d: c.Cert(encoding=e, data=d), u8, small),
    st.builds(lambda e, d: c.CertReq(encoding=e, data=d), u8, small),
    st.builds(lambda m, d: c.Auth(method=m, data=d), u8, small),
    st.builds(lambda d: c.Nonce(data=d), st.binary(min_size=16, max_size=256)),
    st.builds(lambda t, d, p, s: c.Notify(notify_type=t, data=d, protocol=p, spi=s), u16, small, u8,
              st.sampled_from([b"", b"abcd"])),
    deletes(),
    st.builds(lambda d: c.Vendor(data=d), small),
    st.builds(lambda s, i: c.TS(selectors=tuple(s), initiator=i), st.lists(selectors, max_size=4), st.booleans()),
    st.builds(lambda t, d: c.Unknown(raw_type=t, data=d), unknown_types, small),
)
headers = st.builds(lambda a, b, e, f, m: c.Header(a, b, 0, e, f, m), spi8, spi8, u8, u8, u32)
