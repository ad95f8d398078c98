"""Admission: an overloaded switch turns a top-up away at once with 91 (INTERFACES.md 1.5),
before it uses its key (the payer may send it again) and with nothing recorded: writing a
record for every shed request would spend the journal, the resource that is short, on
requests that are turned away (see docs/decisions.md).

Overloaded means any of: the switch's in-flight cap is reached; the request itself queued
longer than `max_queue_delay` between arriving at its channel and admission (the event loop
is behind); journal commits queue longer than that (`IntakeQueue`). Queueing time, not only
a count, so that what is accepted is answered within the latency objective.
"""

from __future__ import annotations

import logging
import time

from switch.flow.codes import ResponseCode
from switch.flow.in_flight import InFlight
from switch.flow.messages import Answer
from switch.flow.queueing import IntakeQueue
from switch.flow.transaction import Transaction

log = logging.getLogger("airswitch.flow")

SHED_REPORT_EVERY = 1.0   # seconds between log lines that count shed requests
SHED = Answer(response_code=ResponseCode.UNAVAILABLE)


class Admission:
    def __init__(self, in_flight: InFlight, max_in_flight: int, intakes: IntakeQueue,
                 max_queue_delay: float) -> None:
        self.in_flight = in_flight
        self.max_in_flight = max_in_flight
        self.intakes = intakes
        self.max_queue_delay = max_queue_delay
        self.shed = 0                 # requests turned away since the last report
        self.shed_total = 0           # ... since the start
        self._reported = time.monotonic()

    async def prepare(self, txn: Transaction) -> Answer | None:
        arrived = txn.request.arrived
        if len(self.in_flight) >= self.max_in_flight:
            why = "in-flight cap"
        elif arrived and time.monotonic() - arrived > self.max_queue_delay:
            why = "queued before admission"
        elif self.intakes.delay() > self.max_queue_delay:
            why = "journal commits queue"
        else:
            return None
        self._count(why)
        return SHED

    def _count(self, why: str) -> None:
        self.shed += 1
        self.shed_total += 1
        now = time.monotonic()
        if now - self._reported >= SHED_REPORT_EVERY:
            log.warning("overload: %d top-up(s) answered 91 at once in the last %.0fs (%s)", self.shed,
                        now - self._reported, why)
            self.shed = 0
            self._reported = now
