"""Repeat: a top-up sent again because its answer was lost (bank87 0201) gets the original's
answer again (same 38, 39), or that answer when it comes if the original is still in flight
here; with no original it goes on as a new top-up. A repeat whose amount or number differ
from its original's is answered 94 (INTERFACES.md 1.5). Nothing is recorded for a replay.
"""

from __future__ import annotations

import asyncio
import logging

from routing import InvalidMsisdn, normalise_msisdn
from switch.flow.codes import ResponseCode
from switch.flow.in_flight import InFlight
from switch.flow.messages import Answer, Kind
from switch.flow.transaction import Transaction, approval
from switch.journal import Journal, JournalError

log = logging.getLogger("airswitch.flow")


def same_number(a: str | None, b: str | None, country: str) -> bool:
    """Two ways of writing a number name the same subscriber (raw when they do not normalise)."""
    return comparable(a, country) == comparable(b, country)


def comparable(msisdn: str | None, country: str) -> str | None:
    try:
        return normalise_msisdn(msisdn, country)
    except InvalidMsisdn:
        return msisdn


class Repeat:
    def __init__(self, journal: Journal, in_flight: InFlight) -> None:
        self.journal = journal
        self.in_flight = in_flight

    async def prepare(self, txn: Transaction) -> Answer | None:
        request = txn.request
        if request.kind != Kind.REPEAT:
            return None
        country = request.payer.acquirer.country
        pending = self.in_flight.waiting_for(txn.key)
        if pending is not None:
            original: Transaction | None = await asyncio.shield(pending)
            if original is None:
                return Answer(response_code=ResponseCode.MALFUNCTION)
            if original.request.amount != request.amount or \
                    not same_number(original.request.msisdn, request.msisdn, country):
                return Answer(response_code=ResponseCode.DUPLICATE)
            return original.answer()
        try:
            stored = await self.journal.find(request.acquirer_id, request.tracking_code, txn.business_day)
        except JournalError as exc:
            log.error("repeat of %s: journal unavailable (%s): 91", request.tracking_code, exc,
                      extra={"repeat": "repeats answered 91, journal unavailable"})
            return Answer(response_code=ResponseCode.UNAVAILABLE)   # retryable: the payer repeats again
        if stored is None:
            return None
        if stored.amount != request.amount or stored.msisdn != comparable(request.msisdn, country):
            return Answer(response_code=ResponseCode.DUPLICATE)
        if stored.response_code is None:
            # Held by a process that has not finished it (or died mid-flight): not known yet.
            return Answer(response_code=ResponseCode.UNAVAILABLE)
        if stored.response_code == ResponseCode.APPROVED:
            return approval(stored.approval_code, stored.operator_id, stored.operator_ref)
        return Answer(response_code=ResponseCode(stored.response_code))
