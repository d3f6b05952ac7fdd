"""Persistence port for single-use challenges (credential activation and device attestation).

The lead backs :class:`ChallengeRepository` with the SQL store; :class:`InMemoryChallengeRepository`
exists for unit tests only (one process, no durability).  Single use is enforced by ``consume``,
which must be an atomic compare-and-set, e.g.
``UPDATE challenge SET consumed_at = :now WHERE id = :id AND consumed_at IS NULL`` → rowcount == 1.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Protocol, TypeVar


class Challenge(Protocol):
    """What every stored challenge exposes."""

    @property
    def id(self) -> str: ...

    @property
    def expires_at(self) -> datetime: ...


C = TypeVar("C", bound=Challenge)


class ChallengeRepository(Protocol[C]):
    """Stores challenges by id; ``consume`` marks one used exactly once."""

    def add(self, challenge: C) -> None:
        """Store a new challenge (ids are unique; a duplicate id is an error)."""
        ...

    def get(self, challenge_id: str) -> C | None:
        """The challenge, consumed or not, or None."""
        ...

    def consume(self, challenge_id: str, now: datetime) -> bool:
        """Atomically mark as consumed; False when unknown or already consumed."""
        ...


class InMemoryChallengeRepository(ChallengeRepository[C]):
    """Test-only implementation (a dict and a lock)."""

    def __init__(self) -> None:
        self._items: dict[str, C] = {}
        self._consumed: dict[str, datetime] = {}
        self._lock = threading.Lock()

    def add(self, challenge: C) -> None:
        """Store a new challenge."""
        with self._lock:
            if challenge.id in self._items:
                raise KeyError(f"duplicate challenge id {challenge.id}")
            self._items[challenge.id] = challenge

    def get(self, challenge_id: str) -> C | None:
        """The challenge or None."""
        with self._lock:
            return self._items.get(challenge_id)

    def consume(self, challenge_id: str, now: datetime) -> bool:
        """Compare-and-set under the lock."""
        with self._lock:
            if challenge_id not in self._items or challenge_id in self._consumed:
                return False
            self._consumed[challenge_id] = now
            return True
