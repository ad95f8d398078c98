"""Latency figures the simulators report."""

from __future__ import annotations


def percentile(latencies_ms: list[float], share: float) -> float:
    """The latency below which `share` of the answers came (0.0 with none)."""
    if not latencies_ms:
        return 0.0
    ordered = sorted(latencies_ms)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]
