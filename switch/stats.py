"""Histogram counts kept by whoever measures (the journal's commits, the admin's requests) and read
by the Prometheus collector when it scrapes: plain lists, no metric objects on the money path."""

from __future__ import annotations

from bisect import bisect_left


class Buckets:
    """One histogram's counts: per bucket (not cumulative: one increment per observation) and sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)   # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1   # le: a value equal to a bound is in its bucket
        self.sum += value

    def cumulative(self) -> list[tuple[str, float]]:
        running, out = 0, []
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts):
            running += count
            out.append((bound, running))
        return out
