"""ocsp.shared_presigned: the first worker to publish a response wins, the others read its bytes;
old files expire; the directory is bounded in bytes; nothing is shared without a directory."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ocsp.shared_presigned import SharedPresigned


def test_first_publisher_wins_and_everyone_serves_its_bytes(tmp_path: Path) -> None:
    shared = SharedPresigned(tmp_path / "ocsp")
    key = shared.key(b"tbs", b"alg", [b"cert"])
    assert key != shared.key(b"tbs", b"alg", [b"other cert"]) and shared.get(key) is None
    with ThreadPoolExecutor(8) as pool:
        served = list(pool.map(lambda i: shared.publish(key, b"response %d" % i), range(32)))
    assert len(set(served)) == 1 and shared.get(key) == served[0]
    assert [p.name for p in (tmp_path / "ocsp").iterdir()] == [key]  # no temporary file left


def test_old_responses_expire_and_oversized_files_are_ignored(tmp_path: Path) -> None:
    shared = SharedPresigned(tmp_path)
    shared.publish("old", b"x")
    shared.publish("new", b"y")
    past = time.time() - 7200
    os.utime(tmp_path / "old", (past, past))
    assert shared.expire(3600) == 1
    assert shared.get("old") is None and shared.get("new") == b"y"
    (tmp_path / "big").write_bytes(b"z" * (64 * 1024 + 1))
    assert shared.get("big") is None


def test_the_directory_is_bounded_and_expiry_makes_room(tmp_path: Path) -> None:
    shared = SharedPresigned(tmp_path, max_bytes=3 * 4096)
    served = [shared.publish(f"k{i}", b"response %d" % i) for i in range(5)]
    assert served == [b"response %d" % i for i in range(5)]  # everyone is answered ...
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k0", "k1", "k2"]  # ... 3 files fit
    other = SharedPresigned(tmp_path, max_bytes=3 * 4096)  # another worker: counts at its first scan
    assert other.expire(3600) == 0 and other.used == 3 * 4096 and other.publish("k9", b"r") == b"r"
    assert not (tmp_path / "k9").exists() and other.publish("k1", b"mine") == b"response 1"
    past = time.time() - 7200
    os.utime(tmp_path / "k0", (past, past))
    assert shared.expire(3600) == 1 and shared.used == 2 * 4096
    assert shared.publish("k5", b"response 5") == b"response 5" and shared.get("k5") == b"response 5"


def test_single_process_shares_nothing() -> None:
    shared = SharedPresigned(None)
    assert shared.publish("k", b"mine") == b"mine" and shared.get("k") is None and shared.expire(1) == 0
