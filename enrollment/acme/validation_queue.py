"""The challenge validation queue (RFC 8555 §7.5.1: validation runs after the client's POST, the
client polls): a fixed pool of worker threads shared fairly between ACME accounts.

- At most ``per_account`` validations of one account run at once, so one account pointing its
  identifiers at a host that never answers occupies at most that many workers.
- Accounts with waiting work are served round-robin: an account's next job waits behind one job
  of every other account with work, never behind all of another account's backlog.
- At most ``per_account_queue`` jobs wait per account and ``max_queue`` in total; beyond that
  :meth:`FairValidationQueue.submit` refuses (the challenge POST answers ``rateLimited``).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, OrderedDict, deque
from collections.abc import Callable

log = logging.getLogger("ikepki.acme")
Job = Callable[[], None]


class FairValidationQueue:
    def __init__(self, workers: int, per_account: int, per_account_queue: int, max_queue: int) -> None:
        self.workers, self.per_account = workers, per_account
        self.per_account_queue, self.max_queue = per_account_queue, max_queue
        self._cv = threading.Condition()
        self._waiting: OrderedDict[str, deque[Job]] = OrderedDict()  # round-robin order of accounts
        self._running: Counter[str] = Counter()
        self._queued = 0
        self._threads: list[threading.Thread] = []
        self._closed = False

    def has_room(self, account: str) -> bool:
        with self._cv:
            return self._room(account)

    def _room(self, account: str) -> bool:
        waiting = self._waiting.get(account)
        return self._queued < self.max_queue and (waiting is None or len(waiting) < self.per_account_queue)

    def submit(self, account: str, job: Job) -> bool:
        """Queue ``job`` for ``account``; False (nothing queued) when the account's or the total
        queue is full."""
        with self._cv:
            if self._closed or not self._room(account):
                return False
            self._waiting.setdefault(account, deque()).append(job)
            self._queued += 1
            if len(self._threads) < self.workers:
                thread = threading.Thread(target=self._work, name=f"acme-va-{len(self._threads)}", daemon=True)
                self._threads.append(thread)
                thread.start()
            self._cv.notify()
        return True

    def pending(self, account: str) -> tuple[int, int]:
        """(running, waiting) validations of ``account``."""
        with self._cv:
            return self._running[account], len(self._waiting.get(account, ()))

    def _next(self) -> tuple[str, Job] | None:
        for account, jobs in self._waiting.items():
            if self._running[account] >= self.per_account:
                continue
            job = jobs.popleft()
            if jobs:
                self._waiting.move_to_end(account)  # the others with work go first next time
            else:
                del self._waiting[account]
            self._running[account] += 1
            self._queued -= 1
            return account, job
        return None

    def _work(self) -> None:
        while True:
            with self._cv:
                while (item := self._next()) is None:
                    if self._closed:
                        return
                    self._cv.wait()
            account, job = item
            try:
                job()
            except Exception:  # the job records its own outcome; never lose the worker
                log.exception("acme: validation job failed")
            finally:
                with self._cv:
                    self._running[account] -= 1
                    if self._running[account] <= 0:
                        del self._running[account]
                    self._cv.notify_all()

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._waiting.clear()
            self._queued = 0
            self._cv.notify_all()
