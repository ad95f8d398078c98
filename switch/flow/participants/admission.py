"""Admission: over the switch's own in-flight cap, turn the request away at once (91).

Before the dedupe key is used, so the payer may send it again (INTERFACES.md 1.5: never
queued without bound).
"""

from __future__ import annotations

from switch.flow.codes import ResponseCode
from switch.flow.in_flight import InFlight
from switch.flow.transaction import Transaction


class Admission:
    def __init__(self, in_flight: InFlight, max_in_flight: int) -> None:
        self.in_flight = in_flight
        self.max_in_flight = max_in_flight

    async def prepare(self, txn: Transaction) -> ResponseCode | None:
        if len(self.in_flight) >= self.max_in_flight:
            return ResponseCode.UNAVAILABLE
        return None
