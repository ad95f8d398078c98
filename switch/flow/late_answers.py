"""Late answers: an operator answered after the switch gave up on it (the payer got 91).

The answer is journaled against its transaction as an event that does not decide the
state: the reversal stored with the 91 undoes any credit. One case needs more: a late
approval whose reversal was already settled because the operator had nothing to reverse
then (opa87 25, opb93 480, opcjson NOT_FOUND): the credit came after the reversal, so the
reversal is reopened and sent again. A reversal settled as reversed (00 / 400 / OK) undid
the credit already and is left alone.

The decision reads the journal. While the journal cannot be read (a Postgres outage, the
switch on its spill file) the decision waits and is tried again with backoff, until it
can be taken; the answer itself is recorded (spilled) at once.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable, Mapping

import msgspec

from switch.clock import utcnow
from switch.flow.codes import ResponseCode
from switch.flow.states import TxnState, check_transition
from switch.journal import Journal, JournalOverloaded, JournalRejected, JournalUnavailable, Outcome, ReversalUpdate
from switch.providers.base import OperatorAnswer, Provider, TopUp

log = logging.getLogger("airswitch.flow")

RETRY_START = 0.5    # seconds before the first retry of a journal write or read that failed
RETRY_MAX = 30.0     # seconds between retries at most


class LateAnswers:
    def __init__(self, journal: Journal, providers: Mapping[str, Provider],
                 on_reversal_stored: Callable[[], None]) -> None:
        self.journal = journal
        self.providers = providers
        self.on_reversal_stored = on_reversal_stored
        self._tasks: set[asyncio.Task] = set()

    def __call__(self, operator_id: str, topup: TopUp, answer: OperatorAnswer) -> None:
        """A link's late-answer handler: record (and decide) in the background."""
        task = asyncio.get_running_loop().create_task(self._handle(operator_id, topup, answer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def pending(self) -> int:
        """Late answers not yet recorded or decided."""
        return len(self._tasks)

    async def _handle(self, operator_id: str, topup: TopUp, answer: OperatorAnswer) -> None:
        try:
            await self.record(operator_id, topup, answer)
        except Exception:
            log.critical("txn %s: late answer %s from %s not recorded or not decided: reconcile it",
                         topup.txn_id, answer.operator_code, operator_id, exc_info=True)

    async def record(self, operator_id: str, topup: TopUp, answer: OperatorAnswer) -> None:
        late = Outcome(txn_id=topup.txn_id, ended_at=utcnow(), state=TxnState.UNKNOWN,
                       response_code=ResponseCode.UNAVAILABLE, operator_id=operator_id,
                       operator_ref=answer.operator_ref, approval_code=None, operator_code=answer.operator_code,
                       latency_ms=0.0, event="late_answer")
        await self._retrying(f"late answer {answer.operator_code} from {operator_id}", topup.txn_id,
                             lambda: self.journal.record_outcome(late))
        if answer.response_code == ResponseCode.APPROVED:
            await self._retrying("decision on a late approval", topup.txn_id,
                                 lambda: self.reopen_if_nothing_was_reversed(operator_id, late))

    async def reopen_if_nothing_was_reversed(self, operator_id: str, late: Outcome) -> None:
        current = await self.journal.transaction(late.txn_id)
        if current is None or current.state != TxnState.REVERSED:
            return   # the reversal is still owed (it will undo the credit), or was settled by a person
        provider = self.providers.get(operator_id)
        if provider is None:
            log.critical("txn %s: late approval from %s, which is no longer configured, after its reversal was "
                         "settled (%s): reconcile it by hand", late.txn_id, operator_id, current.operator_code)
            return
        if not provider.is_nothing_to_reverse(current.operator_code or ""):
            return   # the operator reversed the credit already
        log.warning("txn %s: late approval after its reversal was settled as nothing to reverse (%s): "
                    "reversing again", late.txn_id, current.operator_code)
        await self.journal.record_reversal_update(
            ReversalUpdate(txn_id=late.txn_id, state="pending", attempts=0, next_attempt_at=utcnow(),
                           last_error="late approval after the reversal", operator_code=None),
            msgspec.structs.replace(late, ended_at=utcnow(), event="reversal_reopened",
                                    state=check_transition(current.state, TxnState.UNKNOWN)))
        self.on_reversal_stored()

    async def _retrying(self, what: str, txn_id: str, attempt) -> None:
        """Until the journal takes it; a record the database refuses for good (JournalRejected) is not retried."""
        delay = RETRY_START
        while True:
            try:
                await attempt()
                return
            except JournalRejected:
                raise
            except (JournalUnavailable, JournalOverloaded) as exc:
                log.error("txn %s: %s not journaled yet (%s); trying again in %.1fs", txn_id, what, exc, delay)
            await asyncio.sleep(delay)
            delay = min(RETRY_MAX, delay * 2)

    async def stop(self) -> None:
        """At shutdown: what is still waiting for the journal is logged, for reconciliation."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            log.critical("%d late answer(s) not journaled or not decided at shutdown: reconcile them",
                         len(self._tasks))
            await asyncio.gather(*self._tasks, return_exceptions=True)
