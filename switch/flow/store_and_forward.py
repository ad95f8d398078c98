"""Store-and-forward: the reversals the switch owes operators, sent until answered.

A reversal is stored in the journal before anything is acknowledged (with the
outcome that creates the debt: an operator that did not answer, or an
acquirer's 0400/0420). The forwarder sends each one in its operator's dialect,
repeats it (0421/1421, or again for opcjson) with capped exponential backoff
until the operator answers, and keeps them in order per operator: the next
reversal for an operator waits for the one before it. After `max_attempts`
tries a reversal moves to "needs manual reconciliation", which `airswitch
reversals` lists and resolves.

With several switch processes on one journal only the one holding the journal's
lead (a Postgres advisory lock) forwards and recovers; another takes over when it
dies. Crash recovery lives here too: a request that was routed to an operator more
than `orphan_age` ago and has no outcome at all was lost with a process that
died; its outcome is recorded unknown and its reversal queued.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Awaitable, Callable, Mapping

from switch.clock import utcnow
from switch.app.config import ReversalConfig
from switch.flow.codes import ResponseCode
from switch.flow.states import TxnState, check_transition
from switch.journal import Journal, JournalError, Outcome, PendingReversal, Reversal, ReversalUpdate
from switch.providers.base import NoAnswer, NotSent, OperatorReversal, Provider

log = logging.getLogger("airswitch.reversals")

RECOVERY_LOOKBACK = timedelta(days=2)   # how far back the first orphan scan after a start looks
RECOVERY_EVERY = 10.0                   # seconds between orphan scans
LEAD_RETRY = 2.0                        # seconds between attempts to take the lead from another process


class ReversalForwarder:
    def __init__(self, journal: Journal, providers: Mapping[str, Provider], config: ReversalConfig,
                 on_reversed: Callable[[str], Awaitable[bool]]):
        self.journal = journal
        self.providers = providers
        self.config = config
        self.on_reversed = on_reversed  # (txn_id) -> returned the payer's float (True: done, False: try again)
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._scanned_until: datetime | None = None
        self._last_scan = 0.0
        self._paused = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="reversal forwarder")

    def reconfigure(self, config: ReversalConfig) -> None:
        """A reloaded configuration: backoff, attempts and polling apply from the next round."""
        self.config = config

    def wake(self) -> None:
        """A reversal was just stored: look now rather than at the next poll."""
        self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                if not await self.journal.try_lead():
                    await asyncio.sleep(LEAD_RETRY)   # another process forwards; take over if it dies
                    continue
                if loop.time() - self._last_scan >= RECOVERY_EVERY:
                    self._last_scan = loop.time()
                    await self.recover_orphans()
                await self.forward_due()
                if self._paused:
                    self._paused = False
                    log.warning("store-and-forward resumed: the journal answers again")
            except JournalError as exc:
                if not self._paused:  # once per outage, not once per poll
                    self._paused = True
                    log.error("store-and-forward paused: journal unavailable: %s", exc)
            except Exception:
                log.exception("store-and-forward round failed; retrying")
            try:
                await asyncio.wait_for(self._wake.wait(), self.config.poll_interval)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()

    async def forward_due(self) -> int:
        """One round: the oldest pending reversal of each operator, if due. Returns how many were sent."""
        pending = await self.journal.reversals(("pending",))
        heads: dict[str, PendingReversal] = {}
        for reversal in pending:
            heads.setdefault(reversal.operator_id, reversal)
        now = utcnow()
        due = [reversal for reversal in heads.values() if reversal.next_attempt_at <= now]
        await asyncio.gather(*(self._attempt(reversal) for reversal in due))
        if due and len(pending) > len(heads):
            self._wake.set()  # more are queued behind the heads just sent: go again without waiting for the poll
        return len(due)

    async def _attempt(self, pending: PendingReversal) -> None:
        attempts = pending.attempts + 1
        reversal = OperatorReversal(
            txn_id=pending.txn_id, tracking_code=pending.tracking_code, msisdn=pending.msisdn or "",
            amount=pending.amount or 0, currency=pending.currency or "", original_stan=pending.operator_stan or "000000",
            original_sent_at=pending.operator_sent_at or pending.created_at, attempt=pending.attempts)
        provider = self.providers.get(pending.operator_id)
        try:
            if provider is None:
                raise NotSent(f"operator {pending.operator_id} is not configured")
            answer = await provider.reverse(reversal)
        except (NoAnswer, NotSent) as exc:
            error, code = str(exc), None
        else:
            if answer.settled:
                # The payer's float first: it is idempotent, and a reversal whose float could not be returned
                # stays pending and is tried again.
                if not await self.on_reversed(pending.txn_id):
                    error, code = "operator reversed it but the float could not be returned yet", answer.operator_code
                else:
                    await self._finish(pending, attempts, "done", TxnState.REVERSED, "reversal_done", answer.operator_code,
                                       None)
                    log.info("txn %s: reversed at %s (%s) after %d attempt(s)", pending.txn_id, pending.operator_id,
                             answer.operator_code, attempts)
                    return
            else:
                error, code = f"operator answered {answer.operator_code}", answer.operator_code
        if attempts >= self.config.max_attempts:
            log.critical("txn %s: reversal at %s failed %d times (%s): needs manual reconciliation",
                         pending.txn_id, pending.operator_id, attempts, error)
            await self._finish(pending, attempts, "failed", TxnState.REVERSAL_FAILED, "reversal_failed", code,
                               error)
            return
        delay = min(self.config.backoff_max, self.config.backoff_start * 2 ** (attempts - 1))
        log.warning("txn %s: reversal at %s not settled (%s); attempt %d, next in %.0fs", pending.txn_id,
                    pending.operator_id, error, attempts, delay)
        await self.journal.record_reversal_update(ReversalUpdate(
            txn_id=pending.txn_id, state="pending", attempts=attempts,
            next_attempt_at=utcnow() + timedelta(seconds=delay), last_error=error, operator_code=code))

    async def _finish(self, pending: PendingReversal, attempts: int, queue_state: str, txn_state: TxnState,
                      event: str, code: str | None, error: str | None) -> None:
        await finish_reversal(self.journal, pending, attempts, queue_state, txn_state, event, code, error)

    async def recover_orphans(self) -> int:
        """Requests routed to an operator with no outcome, older than orphan_age: lost in a crash."""
        now = utcnow()
        until = now - timedelta(seconds=self.config.orphan_age)
        since = self._scanned_until - timedelta(seconds=RECOVERY_EVERY) if self._scanned_until else now - RECOVERY_LOOKBACK
        orphans = await self.journal.orphans(since, until)
        for orphan in orphans:
            log.warning("txn %s: sent to %s at %s and never finished (a crash): outcome unknown, reversal queued",
                        orphan.txn_id, orphan.routed_operator, orphan.operator_sent_at)
            await self.journal.record_outcome(
                Outcome(txn_id=orphan.txn_id, ended_at=utcnow(), state=check_transition(None, TxnState.UNKNOWN),
                        response_code=ResponseCode.UNAVAILABLE,
                        operator_id=orphan.routed_operator, operator_ref=None, approval_code=None, operator_code=None,
                        latency_ms=0.0, event="recovered"),
                Reversal(txn_id=orphan.txn_id, operator_id=orphan.routed_operator, reason="crash_recovery",
                         created_at=utcnow()))
        self._scanned_until = until
        if orphans:
            self.wake()
        return len(orphans)

    async def resolve(self, txn_id: str, note: str) -> bool:
        return await resolve_reversal(self.journal, txn_id, note)


async def finish_reversal(journal: Journal, pending: PendingReversal, attempts: int, queue_state: str,
                          txn_state: TxnState, event: str, code: str | None, error: str | None) -> None:
    """End a stored reversal and move its transaction to its next state, in one commit."""
    original = await journal.transaction(pending.txn_id)
    outcome = Outcome(
        txn_id=pending.txn_id, ended_at=utcnow(),
        state=check_transition(original.state if original else TxnState.UNKNOWN, txn_state),
        response_code=(original.response_code if original and original.response_code else ResponseCode.UNAVAILABLE),
        operator_id=pending.operator_id, operator_ref=original.operator_ref if original else None,
        approval_code=original.approval_code if original else None, operator_code=code, latency_ms=0.0,
        event=event)
    await journal.record_reversal_update(
        ReversalUpdate(txn_id=pending.txn_id, state=queue_state, attempts=attempts, next_attempt_at=utcnow(),
                       last_error=error, operator_code=code), outcome)


async def resolve_reversal(journal: Journal, txn_id: str, note: str) -> bool:
    """A person settled a reversal with the operator by other means: close it (state resolved). Only a
    failed one: a pending one is still being sent, and its next attempt would write over the resolution."""
    owed = await journal.reversal(txn_id)
    if owed is None or owed.state != "failed":
        return False
    await finish_reversal(journal, owed, owed.attempts, "resolved", TxnState.RESOLVED, "manual_resolution",
                          None, note)
    return True
