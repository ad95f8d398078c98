"""The engine: runs one transaction through its participants, in the manner of jPOS's
transaction manager, without its size.

A participant has one or two steps:

- `prepare(txn)`: do its part. Returns None to go on, a `ResponseCode` to refuse the
  transaction with that code, or an `Answer` to answer as is with nothing recorded (a
  repeat's replay). The last participant decides the state (`txn.decide`).
- `end(txn)`, its undo, for a participant that takes something: called once for every
  participant whose `prepare` ran, in reverse order, when the transaction has ended,
  whatever ended it: it keeps or gives back what its prepare took, by the transaction's
  state (capture a hold on approval, keep it while the outcome is unknown, release it
  otherwise). Its own failures are its to log. A participant that takes nothing has none.

A transaction that ends before its intake holds the dedupe key is recorded here as a
refusal that uses no key; after that, the journal participant's `end` records the
outcome, so no answer leaves before its record is durable.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Protocol, runtime_checkable

from switch.clock import BusinessCalendar
from switch.errors import LocalProtocolError
from switch.flow.codes import ResponseCode
from switch.flow.messages import Answer, Request
from switch.flow.states import TxnState
from switch.flow.transaction import Transaction
from switch.journal import Journal, JournalError

log = logging.getLogger("airswitch.flow")

Step = ResponseCode | Answer | None
EndObserver = Callable[[Request, Answer, "str | None", float, "float | None"], None]


class Participant(Protocol):
    async def prepare(self, txn: Transaction) -> Step:
        """Do this participant's part; None to go on."""


@runtime_checkable
class UndoingParticipant(Participant, Protocol):
    async def end(self, txn: Transaction) -> None:
        """Keep or give back what prepare took, by txn.state (None: ended by a bug, outcome unknown)."""


class Chain:
    """The participants of one kind of transaction, in order (built once, run for every request)."""

    def __init__(self, *participants: Participant) -> None:
        # (prepare, end or None), bound once: the engine runs these for every request.
        self.steps = tuple((p.prepare, p.end if isinstance(p, UndoingParticipant) else None)
                           for p in participants)


class Engine:
    def __init__(self, journal: Journal, calendar: BusinessCalendar, on_end: EndObserver | None = None) -> None:
        self.journal = journal
        self.calendar = calendar
        # Called once per request as its answer leaves, for metrics: (request, answer, operator or None,
        # seconds since it was received, the operator's round trip or None). Must be cheap and not raise.
        self.on_end = on_end

    def transaction(self, request: Request) -> Transaction:
        return Transaction(request, self.calendar.day_of)

    async def run(self, request: Request, chain: Chain) -> Answer:
        txn = self.transaction(request)
        ends: list = []
        step: Step = None
        try:
            for prepare, end in chain.steps:
                if end is not None:
                    ends.append(end)
                step = await prepare(txn)
                if step is not None:
                    break
            if isinstance(step, Answer):
                pass    # answered as is (a replay, a shed request): nothing decided, nothing recorded
            elif step is not None:
                txn.decide(TxnState.REFUSED, step)
            elif txn.state is None:
                raise LocalProtocolError(f"txn {txn.txn_id}: the participants ended without a decision")
        finally:
            # Also on an exception (a bug): then txn.state is None and every participant keeps what it
            # holds, as for an unknown outcome; orphan recovery reverses the request if it was sent.
            for end in reversed(ends):
                try:
                    await end(txn)
                except Exception:   # a bug in one undo must not skip the others
                    log.exception("txn %s: %s failed", txn.txn_id, end.__qualname__)
        if isinstance(step, Answer):
            answer = step
        else:
            if not txn.journaled:
                await self.record_refusal(txn)
            answer = txn.answer()
        if self.on_end is not None:
            self.on_end(request, answer, txn.operator_id, time.perf_counter() - txn.started, txn.operator_seconds)
        return answer

    async def record_refusal(self, txn: Transaction) -> None:
        """A transaction turned away before its intake held the dedupe key: both records, no key."""
        try:
            await self.journal.record_refusal(txn.intake(uses_key=False), txn.outcome())
        except JournalError as exc:
            log.error("txn %s: refusal %s not journaled: %s", txn.txn_id, txn.response_code, exc,
                      extra={"repeat": "refusals not journaled"})

    async def refuse(self, request: Request, code: ResponseCode, observed: bool = True) -> Answer:
        """Turn a request away at once, recorded, without a participant (reversals, a bad MAC).
        `observed=False` when the caller reports the answer to `on_end` itself."""
        txn = self.transaction(request)
        txn.decide(TxnState.REFUSED, code)
        await self.record_refusal(txn)
        answer = txn.answer()
        if observed and self.on_end is not None:
            self.on_end(request, answer, None, time.perf_counter() - txn.started, None)
        return answer
