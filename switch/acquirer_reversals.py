"""An acquirer's reversals (INTERFACES.md 1.4, 1.5): 0400 -> 0410, 0420/0421 -> 0430.

The original is found by (32, 37) and must match field 90 (its MTI, STAN, field
7 and acquirer id) and field 4; otherwise it is an unknown original (0410 with
25; an advice is still acknowledged, 0430 with 00). An original that was not
approved needs nothing (00). An approved one gets its reversal stored in the
journal, with the transaction's move to `reversal_pending`, before the 00
leaves; the store-and-forward worker then reverses it at the operator. A 0400
outside the reversal window gets 12; an advice cannot be refused.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import timedelta

from switch.clock import utcnow
from switch.config import AcquirerConfig
from switch.journal import JournalError, Outcome, Reversal, TransactionView

log = logging.getLogger("airswitch.reversal")

REQUEST, ADVICE, ADVICE_REPEAT = "0400", "0420", "0421"
APPROVED, INVALID_TXN, NOT_FOUND, FORMAT_ERROR, NOT_PERMITTED, MALFUNCTION = "00", "12", "25", "30", "57", "96"


def matches_original(original: TransactionView, field_90: str, amount: str) -> bool:
    """Field 90: original MTI 4, STAN 6, field 7 10, acquirer id 11, forwarding id 11."""
    if len(field_90) != 42 or not amount.isdigit() or original.amount != int(amount):
        return False
    return (field_90[0:4] == original.mti and field_90[4:10] == original.stan
            and field_90[10:20] == (original.transmitted_at or "")
            and field_90[20:31].lstrip("0") == original.acquirer_id.lstrip("0"))


class AcquirerReversals:
    def __init__(self, flow, on_stored=None):
        self.flow = flow              # the TopUpFlow: journal, calendar, answers, refusals
        self.on_stored = on_stored    # called when a reversal was stored (wakes the forwarder)

    async def handle(self, request: dict, acquirer: AcquirerConfig) -> dict:
        flow = self.flow
        mti = request["t"]
        advice = mti in (ADVICE, ADVICE_REPEAT)
        received_at = utcnow()
        started = time.perf_counter()
        business_day = flow.calendar.day_of(received_at)
        txn_id = uuid.uuid4().hex

        async def refuse(code: str) -> dict:
            return await flow.refuse(request, txn_id, received_at, business_day, started, code, None)

        problem = flow.format_problem(request, "0400")
        if problem:
            log.info("reversal %s from %s: format error (%s): 30", mti, acquirer.name, problem)
            return await refuse(FORMAT_ERROR)
        if request["32"] != acquirer.institution_id:
            return await refuse(NOT_PERMITTED)
        try:
            original = await flow.journal.find_latest(request["32"], request["37"])
        except JournalError as exc:
            log.error("reversal %s: journal unavailable (%s): 96", request["37"], exc)
            return flow.answer(request, MALFUNCTION)
        if original is not None and original.state is None:
            # Still in flight here: wait (bounded by the operator's timeout) for its outcome, then decide.
            pending = flow.pending_for(original.acquirer_id, original.tracking_code, original.business_day)
            if pending is not None:
                await asyncio.shield(pending)
                original = await flow.journal.find_latest(request["32"], request["37"])
        if original is None or not matches_original(original, request["90"], request["4"]):
            log.info("reversal %s of %s/%s: no such original: %s", mti, request["32"], request["37"],
                     "0430 00" if advice else "25")
            return await refuse(APPROVED if advice else NOT_FOUND)
        if original.state is None and original.routed_operator is None:
            return flow.answer(request, APPROVED)   # never sent to an operator: nothing to undo
        if original.state not in (None, "approved"):
            # Declined, refused, unknown (the switch reverses those itself) or already being reversed.
            return flow.answer(request, APPROVED)
        # Approved, or held by another process that has not finished it: reverse it at the operator.
        window = timedelta(days=flow.config.reversals.window_days)
        if mti == REQUEST and business_day - original.business_day > window:
            log.info("reversal 0400 of %s: original of %s is outside the reversal window: 12", original.txn_id,
                     original.business_day)
            return await refuse(INVALID_TXN)
        outcome = Outcome(txn_id=original.txn_id, ended_at=utcnow(), state="reversal_pending",
                          response_code=original.response_code or "91", operator_id=original.operator_id or original.routed_operator,
                          operator_ref=original.operator_ref, approval_code=original.approval_code,
                          operator_code=None, latency_ms=(time.perf_counter() - started) * 1000.0,
                          event="acquirer_reversal")
        reversal = Reversal(txn_id=original.txn_id, operator_id=original.routed_operator or original.operator_id,
                            reason="acquirer_reversal", created_at=utcnow())
        try:
            await flow.journal.record_outcome(outcome, reversal)
        except JournalError as exc:
            log.error("reversal of %s not stored (%s): 96", original.txn_id, exc)
            return flow.answer(request, MALFUNCTION)
        log.info("txn %s: reversal %s from %s stored; the operator will be reversed", original.txn_id, mti,
                 acquirer.name)
        if self.on_stored is not None:
            self.on_stored()
        return flow.answer(request, APPROVED)
