"""A logging filter that lets through at most ``burst`` records per ``period`` for each message
template (logger + format string), then counts and drops the rest, reporting the count once the
period is over. Under a flood of failing connections (e.g. EMFILE on accept) the log shows a few
lines per period instead of one traceback per attempt."""

from __future__ import annotations

import logging
import threading
import time

MAX_KEYS = 1024  # distinct templates tracked; beyond that the oldest are forgotten


class RateLimitFilter(logging.Filter):
    def __init__(self, period: float = 10.0, burst: int = 5) -> None:
        super().__init__()
        self.period, self.burst = period, burst
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, str], list[float]] = {}  # key -> [window start, passed, dropped]

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = time.monotonic()
        with self._lock:
            window = self._windows.get(key)
            if window is None or now - window[0] >= self.period:
                dropped = int(window[2]) if window is not None else 0
                if window is None and len(self._windows) >= MAX_KEYS:
                    self._windows.pop(next(iter(self._windows)))
                self._windows[key] = [now, 1.0, 0.0]
                if dropped:
                    record.msg = f"{record.msg} [{dropped} similar messages suppressed in the last {self.period:g} s]"
                return True
            if window[1] < self.burst:
                window[1] += 1
                return True
            window[2] += 1
            return False


_installed: dict[str, RateLimitFilter] = {}


def rate_limit_loggers(*names: str, period: float = 10.0, burst: int = 5) -> None:
    """Attach a filter to each named logger (records logged on it directly) and one to every
    handler of the root logger (records propagated from any logger), idempotently."""
    for name in names:
        if name not in _installed:
            _installed[name] = RateLimitFilter(period, burst)
            logging.getLogger(name).addFilter(_installed[name])
    shared = _installed.setdefault("", RateLimitFilter(period, burst))
    for handler in logging.getLogger().handlers:
        if shared not in handler.filters:
            handler.addFilter(shared)
