"""Journaling: the intake before anything leaves, the outcome before the answer does.

prepare: record the intake, which claims the dedupe key in the journal (the authority on
duplicates, across processes and restarts); the key already taken is 94. A refusal found
before the key was claimed is answered now (see Transaction.refusal).

end: record the outcome (with the reversal it creates, in the same commit). An approval
never leaves before its record is durable: when the outcome cannot be recorded in time the
payer gets 96, and an approval is compensated by a stored reversal.
"""

from __future__ import annotations

import logging
import uuid

from switch.clock import utcnow
from switch.flow.codes import ResponseCode
from switch.flow.queueing import IntakeQueue
from switch.flow.states import TxnState, check_transition
from switch.flow.transaction import Transaction
from switch.journal import Journal, JournalError, Outcome, Reversal

log = logging.getLogger("airswitch.flow")


class Journaling:
    def __init__(self, journal: Journal, intakes: IntakeQueue) -> None:
        self.journal = journal
        self.intakes = intakes     # how long intakes wait for their commit, for admission

    async def prepare(self, txn: Transaction) -> ResponseCode | None:
        txn_id = txn.txn_id
        self.intakes.enter(txn_id)
        try:
            claimed = await self.journal.record_intake(txn.intake(uses_key=True))
        except JournalError as exc:
            log.error("txn %s: journal could not take the intake (%s): 96", txn.txn_id, exc,
                      extra={"repeat": "intakes the journal could not take, answered 96"})
            txn.journaled = True   # it may still commit after our wait ended: its outcome closes it
            return ResponseCode.MALFUNCTION
        finally:
            self.intakes.leave(txn_id)
        if not claimed:
            # Another process (or a restart) already used this key: recorded as a refusal of its own.
            txn.txn_id = uuid.uuid4().hex
            txn.topup = None
            return ResponseCode.DUPLICATE
        txn.journaled = True
        return txn.refusal

    async def end(self, txn: Transaction) -> None:
        if not txn.journaled or txn.state is None:
            return
        try:
            await self.journal.record_outcome(txn.outcome(), txn.reversal)
        except JournalError as exc:
            log.critical("txn %s: outcome %s/%s NOT journaled in time (%s): answering 96", txn.txn_id,
                         txn.state, txn.response_code, exc)
            if txn.state == TxnState.APPROVED:
                await self._compensate(txn)
            txn.response_code = ResponseCode.MALFUNCTION

    async def _compensate(self, txn: Transaction) -> None:
        """The operator credited, the payer hears 96: undo the credit. If the approval still lands
        later, this later row decides the state, and the reversal is stored with it."""
        answer = txn.operator_answer
        unknown = Outcome(txn_id=txn.txn_id, ended_at=utcnow(), state=TxnState.UNKNOWN,
                          response_code=ResponseCode.MALFUNCTION, operator_id=txn.operator_id,
                          operator_ref=answer.operator_ref if answer else None, approval_code=None,
                          operator_code=answer.operator_code if answer else None, latency_ms=0.0)
        txn.state = check_transition(txn.state, TxnState.UNKNOWN)
        try:
            await self.journal.record_outcome(unknown, Reversal(
                txn_id=txn.txn_id, operator_id=txn.operator_id or "", reason="unknown_outcome",
                created_at=utcnow()))
        except JournalError as exc:
            # Nothing is recorded: the intake has no outcome, and crash recovery reverses it as an orphan.
            log.critical("txn %s: compensating reversal not stored either (%s): left to orphan recovery",
                         txn.txn_id, exc)
