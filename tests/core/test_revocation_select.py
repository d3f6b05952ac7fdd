"""Revocation target selection (ca.revocation) against a real SQLite store: substring filters are
literal (defect 21.3: ``_`` and ``%`` were LIKE wildcards) and the profile guard counts hits."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ca.errors import ErrorKind, PKIError
from ca.model import CertificateInfo, CertificateQuery, CertStatus
from ca.revocation import Selector, select_targets
from ca.store import migrate
from ca.store.db import Database
from ca.store.sql import SqlCertificateStore
from tests.postgres import pg_cluster

SUBJECTS = ["CN=host_1", "CN=hostA1", "CN=100%", "CN=1000", "CN=back\\slash", "CN=backXslash", "CN=a/b", "CN=a_b"]
NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[SqlCertificateStore]:
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            path: Path = tmp_path_factory.mktemp("revsel") / "store.db"
            url = f"sqlite:///{path}"
        else:
            url = stack.enter_context(pg_cluster()).createdb("revsel")
        migrate.upgrade(url)
        db = Database(url)
        stack.callback(db.dispose)
        yield _filled(SqlCertificateStore(db))


def _filled(s: SqlCertificateStore) -> SqlCertificateStore:
    for i, subject in enumerate(SUBJECTS, 1):
        info = CertificateInfo(serial=0x1000 + i, issuer_id="ec", subject=subject, sans=(f"DNS:h{i}.example.test",),
                               profile="machine", not_before=NOW, not_after=NOW + timedelta(days=i),
                               status=CertStatus.valid, der=b"\x30\x00")
        s.insert_certificate(info, NOW, {"at": NOW, "actor": "t", "action": "issue", "channel": "test",
                                         "source": "", "serial": info.serial_hex, "detail": "{}"})
    return s


@settings(max_examples=150, deadline=None)
@given(needle=st.text(alphabet="%_\\/aAbhost1CN=0 ", min_size=1, max_size=6))
def test_subject_filter_is_a_literal_substring(store: SqlCertificateStore, needle: str) -> None:
    expected = {s for s in SUBJECTS if needle.lower() in s.lower()}  # case-insensitive on every database
    q = CertificateQuery(profile="machine", subject_contains=needle, limit=100)
    assert {i.subject for i in store.search(q)} == expected
    assert store.count_matching(q) == len(expected)


def test_profile_guard_counts_what_the_filter_hits(store: SqlCertificateStore) -> None:
    one = select_targets(store, Selector(profile="machine", subject_contains="host_1"))
    assert [t.subject for t in one.targets] == ["CN=host_1"]
    assert select_targets(store, Selector(profile="machine", subject_contains="%")).targets[0].subject == "CN=100%"
    for wide in (Selector(profile="machine", subject_contains="CN="),
                 Selector(profile="machine", expires_after=NOW),
                 Selector(profile="machine", san_contains=".example.test"),
                 Selector(profile="machine")):
        with pytest.raises(PKIError) as err:
            select_targets(store, wide)
        assert err.value.kind is ErrorKind.BAD_REQUEST and "all_of_profile" in err.value.detail
    everything = select_targets(store, Selector(profile="machine", subject_contains="CN=", all_of_profile=True))
    assert len(everything.targets) == len(SUBJECTS)
    with pytest.raises(PKIError):
        select_targets(store, Selector(profile="machine", all_of_profile=True), max_targets=3)
    with pytest.raises(PKIError):
        select_targets(store, Selector(subject_contains="host"))  # a filter without a profile
    found = select_targets(store, Selector(serials=(0x1001, 0xdead)))
    assert [t.serial for t in found.targets] == [0x1001] and found.not_found == [0xdead]
