"""An acquirer's reversals (INTERFACES.md 1.4, 1.5): 0400 -> 0410, 0420/0421 -> 0430.

The original is found by (acquirer, tracking code) and must match what the reversal says
of it (bank87 field 90: its message type, STAN, field 7 and acquirer) and its amount;
otherwise it is an unknown original (25; an advice is still acknowledged, 00). An
original that was not approved needs nothing (00). An approved one gets its reversal
stored in the journal, with the transaction's move to `reversal_pending`, before the 00
leaves; store-and-forward then reverses it at the operator. A request outside the
reversal window gets 12; an advice cannot be refused.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Callable

from switch.clock import utcnow
from switch.flow.codes import ResponseCode
from switch.flow.engine import Engine
from switch.flow.in_flight import InFlight
from switch.flow.messages import Answer, Original, Request
from switch.flow.participants.dedupe import dedupe_key
from switch.flow.states import TxnState, check_transition
from switch.journal import Journal, JournalError, Outcome, Reversal, TransactionView

log = logging.getLogger("airswitch.reversal")


def matches_original(original: TransactionView, claimed: Original | None, amount: int | None) -> bool:
    if claimed is None or amount is None or original.amount != amount:
        return False
    return (claimed.kind == original.mti and claimed.trace == original.stan
            and claimed.transmitted_at == (original.transmitted_at or "")
            and claimed.acquirer_id.lstrip("0") == original.acquirer_id.lstrip("0"))


class AcquirerReversals:
    def __init__(self, engine: Engine, journal: Journal, in_flight: InFlight, window_days: int,
                 on_stored: Callable[[], None]) -> None:
        self.engine = engine
        self.journal = journal
        self.in_flight = in_flight
        self.window_days = window_days
        self.on_stored = on_stored      # wakes store-and-forward

    async def handle(self, request: Request) -> Answer:
        acquirer = request.payer.acquirer
        kind = request.message_type
        if request.problem:
            log.info("reversal %s from %s: format error (%s): 30", kind, acquirer.name, request.problem)
            return await self.engine.refuse(request, ResponseCode.FORMAT_ERROR, observed=False)
        if request.acquirer_id != acquirer.institution_id:
            return await self.engine.refuse(request, ResponseCode.NOT_PERMITTED, observed=False)
        received_at = utcnow()
        try:
            original = await self.journal.find_latest(request.acquirer_id, request.tracking_code)
            if original is not None and original.state is None:
                # Still in flight here: wait (bounded by the operator's timeout) for its outcome, then decide.
                pending = self.in_flight.waiting_for(
                    dedupe_key(original.acquirer_id, original.tracking_code, original.business_day))
                if pending is not None:
                    await asyncio.shield(pending)
                    original = await self.journal.find_latest(request.acquirer_id, request.tracking_code)
        except JournalError as exc:
            log.error("reversal %s: journal unavailable (%s): 96", request.tracking_code, exc,
                      extra={"repeat": "reversals answered 96, journal unavailable"})
            return Answer(response_code=ResponseCode.MALFUNCTION)
        if original is None or not matches_original(original, request.original, request.amount):
            log.info("reversal %s of %s/%s: no such original: %s", kind, request.acquirer_id,
                     request.tracking_code, "00 (advice)" if request.advice else "25")
            return await self.engine.refuse(request, ResponseCode.APPROVED if request.advice
                                            else ResponseCode.NOT_FOUND, observed=False)
        if original.state is None and original.routed_operator is None:
            return Answer(response_code=ResponseCode.APPROVED)   # never sent to an operator: nothing to undo
        if original.state not in (None, TxnState.APPROVED):
            # Declined, refused, unknown (the switch reverses those itself) or already being reversed.
            return Answer(response_code=ResponseCode.APPROVED)
        # Approved, or held by another process that has not finished it: reverse it at the operator.
        business_day = self.engine.calendar.day_of(received_at)
        if not request.advice and business_day - original.business_day > timedelta(days=self.window_days):
            log.info("reversal of %s: original of %s is outside the reversal window: 12", original.txn_id,
                     original.business_day)
            return await self.engine.refuse(request, ResponseCode.INVALID_TXN, observed=False)
        operator_id = original.routed_operator or original.operator_id
        outcome = Outcome(txn_id=original.txn_id, ended_at=utcnow(),
                          state=check_transition(original.state, TxnState.REVERSAL_PENDING),
                          response_code=original.response_code or ResponseCode.UNAVAILABLE,
                          operator_id=original.operator_id or original.routed_operator,
                          operator_ref=original.operator_ref, approval_code=original.approval_code,
                          operator_code=None, latency_ms=0.0, event="acquirer_reversal")
        reversal = Reversal(txn_id=original.txn_id, operator_id=operator_id, reason="acquirer_reversal",
                            created_at=utcnow())
        try:
            await self.journal.record_outcome(outcome, reversal)
        except JournalError as exc:
            log.error("reversal of %s not stored (%s): 96", original.txn_id, exc)
            return Answer(response_code=ResponseCode.MALFUNCTION)
        log.info("txn %s: reversal %s from %s stored; the operator will be reversed", original.txn_id, kind,
                 acquirer.name)
        self.on_stored()
        return Answer(response_code=ResponseCode.APPROVED)
