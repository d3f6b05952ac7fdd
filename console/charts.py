"""Overview figures as plain data: counts bucketed by hour or day and the geometry of a bar
chart the templates draw as inline SVG (attributes only: the CSP allows no inline style)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta


def buckets(times: Iterable[datetime], start: datetime, step: timedelta, n: int) -> list[int]:
    """How many of ``times`` fall in each of ``n`` consecutive buckets of ``step`` from ``start``."""
    counts = [0] * n
    for t in times:
        i = (t - start) // step  # floor: a moment before start is not in bucket 0
        if 0 <= i < n:
            counts[i] += 1
    return counts


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    value: int
    series: str
    label: str


@dataclass(frozen=True)
class BarChart:
    width: int
    height: int
    bars: list[Bar]
    labels: list[tuple[float, str]]  # x, text (every few buckets)
    maximum: int
    series: list[str]

    @property
    def total(self) -> int:
        return sum(b.value for b in self.bars)


def bar_chart(labels: Sequence[str], series: Sequence[tuple[str, Sequence[int]]], width: int = 720,
              height: int = 160, label_every: int = 1) -> BarChart:
    """Grouped bars, one group per label, one bar per series; heights scaled to the maximum."""
    top, bottom = 8, 20
    n = max(len(labels), 1)
    group = width / n
    per = max(len(series), 1)
    bar_w = max((group - 2) / per, 1.0)
    maximum = max((v for _, values in series for v in values), default=0)
    plot = height - top - bottom
    bars: list[Bar] = []
    for i, label in enumerate(labels):
        for j, (name, values) in enumerate(series):
            value = values[i] if i < len(values) else 0
            h = (value / maximum * plot) if maximum else 0.0
            if value and h < 1:
                h = 1.0
            bars.append(Bar(round(i * group + 1 + j * bar_w, 2), round(top + plot - h, 2), round(bar_w, 2),
                            round(h, 2), value, name, label))
    ticks = [(round(i * group + group / 2, 2), label) for i, label in enumerate(labels) if i % label_every == 0]
    return BarChart(width, height, bars, ticks, maximum, [name for name, _ in series])


def top_counts(values: Iterable[str], limit: int = 12) -> list[tuple[str, int]]:
    return Counter(v or "(none)" for v in values).most_common(limit)
