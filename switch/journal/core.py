"""The journal core: everything about journaling that does not depend on the database.

Owns the guarantee callers rely on, written once for both backends: the bounded inbox
between callers and the writer, the group-commit writer task, the commit timeout,
overload, the isolation of a record the database refuses, resolving callers' futures,
the spill file's policy while the database cannot take a batch, and the gate in front of
reads. A ``Store`` (postgres.py, sqlite.py) only says how its database opens, writes and
commits a batch, replays a spill file, and answers reads; it never sees a caller.

Group commit: one asyncio task takes everything queued (up to batch_max), has the store
write it in one transaction, and only once that transaction is committed resolves each
caller's future. While a batch is in flight new records queue up and become the next
batch, so the batch size follows the load with no timer.

Pipelining: a store with ``writers`` > 1 (Postgres: two connections) may have that many
batches in flight at once. The next batch starts while another commits only once it has
``pipeline_min_fill`` records, or once a commit has ended since its oldest record was
queued; an idle writer starts at once. So batches stay large (a second lane never
carries a handful of records), and a record never waits for more than one other commit
to end before its own starts, as long as fewer than batch_max records are queued ahead
of it (past that the journal is saturated, and the bounded queue is the limit).
``commit_waits`` counts records by how many commits ended between their queueing and
the start of their own. Batches in flight together are independent transactions: a
caller that needs one record committed before another awaits the first (the switch
does: an outcome is written only after its intake returned); lock order across batches
is the store's business (the Postgres store sorts by key).

Failure handling:
- queue full -> JournalOverloaded, raised at once, nothing queued;
- the database fails the batch -> every waiter of that batch gets JournalUnavailable
  (the store starts the next batch on a fresh connection);
- a record the database refuses (constraint, bad value) -> the store replays the batch
  with a savepoint per caller, so only that caller gets JournalRejected;
- no commit within commit_timeout -> JournalUnavailable for the waiter.

With a spill directory (Postgres only), a batch the database cannot take goes to a local
fsync'd spill file instead (spill.py), for at most spill_max_seconds; while it exists new
batches follow it there, reads are refused, and the writer tries once a second to have
the store replay it, exactly once, before going back to normal. Past the bound, or if
the spill file cannot be written, new intakes are refused (JournalUnavailable: the
caller answers 96) while outcomes keep being spilled: they record what already happened.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from datetime import date, datetime
from pathlib import Path
from typing import Any, Awaitable, Callable, Protocol

from .records import (
    AdminEvent,
    Intake,
    JournalOverloaded,
    JournalRejected,
    JournalUnavailable,
    Outcome,
    PendingReversal,
    Reversal,
    ReversalQueueRow,
    ThroughputRow,
    ReversalUpdate,
    TransactionQuery,
    TransactionView,
)
from .spill import SpilledWrite, SpillFile
from switch.clock import utcnow
from switch.stats import Buckets

COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)   # seconds
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)   # records per committed batch

log = logging.getLogger("airswitch.journal")

DEFAULT_BATCH_MAX = 500
DEFAULT_PIPELINE_MIN_FILL = 100   # records before a batch starts beside one in flight (clamped to batch_max)
DEFAULT_COMMIT_TIMEOUT = 5.0      # seconds; bounds every wait: queue + commit, reads, connects
DEFAULT_QUEUE_MAX = 10_000        # queued records before record_* raise JournalOverloaded
DEFAULT_SPILL_MAX_SECONDS = 300.0  # how long the switch may run on its spill file before refusing top-ups
DEADLINE_RESOLUTION = 0.01       # seconds: records queued this close together share one commit-timeout timer
SPILL_RETRY_INTERVAL = 1.0        # seconds between attempts to replay the spill into the database
ATTEMPT_TIMEOUT_CAP = 2.0         # with a spill, a write attempt gives up this soon, so callers can still be spilled


class QueuedWrite:
    """One caller's unit of work waiting for the writer: an intake, an outcome, or both
    (a refusal), and the reversal bookkeeping that goes with it. Its rows are written
    together, in one transaction, or not at all."""

    __slots__ = ("intake", "outcome", "reversal", "reversal_update", "future", "queued_after")

    def __init__(self, intake: Intake | None, outcome: Outcome | None, future: asyncio.Future,
                 reversal: Reversal | None = None, reversal_update: ReversalUpdate | None = None,
                 queued_after: int = 0) -> None:
        self.intake = intake
        self.outcome = outcome
        self.reversal = reversal
        self.reversal_update = reversal_update
        self.future = future
        self.queued_after = queued_after  # writes ended (committed or not) when this was queued

    @property
    def droppable(self) -> bool:
        # The caller stopped waiting (timeout, cancellation) before the writer took it. A
        # lone intake is then not written: the request (answered 96) leaves no orphan row
        # holding its dedupe key. Outcomes and refusals are always written: they record
        # what already happened.
        return self.future.done() and self.outcome is None and self.reversal_update is None

    @property
    def claims_answer(self) -> bool:
        """True for a lone intake, whose caller is told whether its dedupe key was free."""
        return self.intake is not None and self.outcome is None


class Store(Protocol):
    """How one database keeps the journal. Called only from the event loop, at most ``writers``
    writes at a time."""

    # Exceptions that belong to one record rather than to the database: the batch is
    # then written again with write_each, to find which.
    record_errors: tuple[type[BaseException], ...]
    # Exceptions meaning a read failed (the caller gets JournalUnavailable).
    read_errors: tuple[type[BaseException], ...]
    # How many write()/write_each() calls may run at once, each on its own connection (optional;
    # 1 when absent). The core never runs more, and never runs replay() beside a write.
    writers: int

    async def open(self) -> None:
        """Connect, create the schema if missing and apply missing migrations."""

    async def close(self) -> None:
        """Close every connection; nothing is written after this."""

    async def write(self, batch: list[QueuedWrite]) -> set[str]:
        """Write the batch in one transaction and commit it. Returns the txn_ids of the intakes
        stored (a keyed intake whose key is taken is not). Raises one of record_errors, with
        nothing committed, if a record was refused; anything else means the database failed,
        and the store starts the next write on a fresh connection."""

    async def write_each(self, batch: list[QueuedWrite]) -> list[set[str] | BaseException]:
        """Write the batch in one transaction with a savepoint per write, and commit. Per write:
        the txn_ids of its intakes stored, or the record error that refused it."""

    async def try_lead(self) -> bool: ...
    async def find(self, acquirer_id: str, tracking_code: str, business_day: date) -> TransactionView | None: ...
    async def find_latest(self, acquirer_id: str, tracking_code: str) -> TransactionView | None: ...
    async def transaction(self, txn_id: str) -> TransactionView | None: ...
    async def reversal(self, txn_id: str) -> PendingReversal | None: ...
    async def reversals(self, states: tuple[str, ...], limit: int) -> list[PendingReversal]: ...
    async def orphans(self, since: datetime, until: datetime) -> list[TransactionView]: ...
    async def states(self) -> dict[str, int]: ...
    async def approved_answers(self) -> set[tuple[str, str]]: ...
    async def approved_at_operators(self) -> list[tuple]: ...
    async def history(self, txn_id: str) -> list[tuple]: ...
    async def count_transactions(self) -> int: ...
    async def summary(self) -> dict[str, int]: ...
    async def outcome_rows(self, txn_id: str) -> list[Outcome]: ...
    async def search(self, query: TransactionQuery, limit: int) -> list[TransactionView]: ...
    async def reversal_queue(self) -> list[ReversalQueueRow]: ...
    async def throughput(self, since: datetime) -> list[ThroughputRow]: ...
    async def ping(self) -> None: ...
    async def insert_admin_event(self, at: datetime, actor: str, action: str, detail: str | None) -> None: ...
    async def admin_events(self, limit: int) -> list[AdminEvent]: ...


class SpillingStore(Store, Protocol):
    """A store that can take back what was spilled while it was unreachable."""

    async def replay(self, spill: SpillFile) -> None:
        """Apply one spill file exactly once (a record already stored is not stored again), then delete it."""


class Inbox:
    """The bounded queue between callers and the writer task (both on the event loop)."""

    def __init__(self, capacity: int) -> None:
        self._items: collections.deque[QueuedWrite] = collections.deque()
        self._capacity = capacity
        self._wakeup = asyncio.Event()
        self._closed = False

    def put(self, item: QueuedWrite) -> None:
        if len(self._items) >= self._capacity:
            raise JournalOverloaded(f"journal queue full ({self._capacity} records waiting)")
        self._items.append(item)
        self._wakeup.set()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def oldest(self) -> QueuedWrite | None:
        return self._items[0] if self._items else None

    @property
    def closed(self) -> bool:
        return self._closed

    def poke(self) -> None:
        """Wake whoever waits in changed(): something besides a put happened (a write ended)."""
        self._wakeup.set()

    async def changed(self) -> None:
        """Until the next put, poke or close."""
        self._wakeup.clear()
        await self._wakeup.wait()

    def take_now(self, limit: int) -> list[QueuedWrite]:
        items = self._items
        return [items.popleft() for _ in range(min(limit, len(items)))]

    async def take(self, limit: int) -> list[QueuedWrite]:
        """Everything queued, up to limit; waits while empty; [] once closed and drained."""
        while not self._items:
            if self._closed:
                return []
            self._wakeup.clear()
            await self._wakeup.wait()
        items = self._items
        return [items.popleft() for _ in range(min(limit, len(items)))]

    def close(self) -> None:
        self._closed = True
        self._wakeup.set()


class JournalCore:
    """A journal on any store: implements the ``Journal`` protocol. See the module docstring."""

    def __init__(
        self,
        store: Store,
        *,
        batch_max: int = DEFAULT_BATCH_MAX,
        commit_timeout: float = DEFAULT_COMMIT_TIMEOUT,
        queue_max: int = DEFAULT_QUEUE_MAX,
        spill_dir: str | Path | None = None,
        spill_max_seconds: float = DEFAULT_SPILL_MAX_SECONDS,
        pipeline_min_fill: int = DEFAULT_PIPELINE_MIN_FILL,
    ) -> None:
        if batch_max < 1 or queue_max < 1 or pipeline_min_fill < 1:
            raise ValueError("batch_max, queue_max and pipeline_min_fill must be >= 1")
        if spill_dir is not None and not hasattr(store, "replay"):
            raise ValueError(f"{type(store).__name__} cannot replay a spill file")
        self._store = store
        self._batch_max = batch_max
        self._lanes = max(1, int(getattr(store, "writers", 1)))
        self._min_fill = min(pipeline_min_fill, batch_max)
        self._commit_timeout = commit_timeout
        self._queue_max = queue_max
        self._read_failures = (TimeoutError, *store.read_errors)
        self._spill_dir = Path(spill_dir) if spill_dir is not None else None
        self._spill_max_seconds = spill_max_seconds
        # A write attempt must give up before its callers' commit_timeout while they can
        # still be spilled; without a spill, it may take all of it.
        self._attempt_timeout = (min(commit_timeout / 2, ATTEMPT_TIMEOUT_CAP) if self._spill_dir is not None
                                 else commit_timeout)
        self._spill: SpillFile | None = None
        self._spill_since = 0.0
        self._last_replay_attempt = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inbox: Inbox | None = None
        self._writer: asyncio.Task | None = None
        self._running = False  # taking records
        self._open = False     # the store is open: reads are served
        self._in_flight: set[asyncio.Task] = set()  # batches being written, at most self._lanes
        self._deadline: Deadline | None = None       # the one records queued now share
        self._writes_ended = 0      # writes ended, committed or not: what QueuedWrite.queued_after counts
        self.batches_committed = 0  # transactions committed by the writer (for tests/metrics)
        self.records_spilled = 0    # for tests/metrics
        # Records by the number of writes that ended between their queueing and the start of their
        # own write (0: it started at once or with the next free lane; 1: it waited for one commit).
        self.commit_waits: collections.Counter[int] = collections.Counter()
        # Per committed batch (not per record): seconds the commit took and records in it, for /metrics.
        self.commit_seconds = Buckets(COMMIT_BUCKETS)
        self.batch_records = Buckets(BATCH_BUCKETS)

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store (connect, migrate), replay what a previous run spilled, start the
        writer. A no-op if already running."""
        if self._running:
            return
        self._loop = asyncio.get_running_loop()
        await self._store.open()
        try:
            # What a previous run spilled and did not replay goes in before anything new.
            for spill in SpillFile.existing(self._spill_dir) if self._spill_dir is not None else []:
                await self._store.replay(spill)
        except BaseException:
            await self._store.close()
            raise
        self._inbox = Inbox(self._queue_max)
        self._writer = asyncio.create_task(self._run_writer(), name="journal-writer")
        self._running = self._open = True

    async def close(self) -> None:
        """Flush everything queued, stop the writer, close the store. Idempotent."""
        if not self._running:
            await self._store.close()  # a store may hold a connection outside the writer (the lead)
            return
        self._running = False  # refuse new records; queued ones are still written
        self._inbox.close()
        await self._writer
        self._open = False
        await self._store.close()

    async def __aenter__(self) -> JournalCore:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- writes -------------------------------------------------------------------------

    async def record_intake(self, intake: Intake) -> bool:
        """True once committed; False if it claims a dedupe key already taken (nothing stored)."""
        return await self._submit(intake, None)

    async def record_outcome(self, outcome: Outcome, reversal: Reversal | None = None) -> None:
        """The outcome, and with it the reversal it makes the switch owe (one commit)."""
        await self._submit(None, outcome, reversal)

    async def record_reversal_update(self, update: ReversalUpdate, outcome: Outcome | None = None) -> None:
        """Another attempt at a stored reversal, or its end (with the transaction's new state)."""
        await self._submit(None, outcome, None, update)

    async def record_refusal(self, intake: Intake, outcome: Outcome) -> None:
        """Both rows, atomically. A refusal never claims the dedupe key."""
        if intake.uses_key:
            raise ValueError("a refusal's intake must have uses_key=False")
        await self._submit(intake, outcome)

    async def _submit(self, intake: Intake | None, outcome: Outcome | None, reversal: Reversal | None = None,
                      update: ReversalUpdate | None = None) -> Any:
        if not self._running:
            raise JournalUnavailable("journal is not running")
        future = self._loop.create_future()
        self._inbox.put(QueuedWrite(intake, outcome, future, reversal, update, self._writes_ended))  # or JournalOverloaded
        # One timer for every record queued within DEADLINE_RESOLUTION rather than a timer each (a
        # timer a record was a quarter of the journal's CPU). On timeout, or if the caller is
        # cancelled, the future is done before the writer takes it, which it sees.
        deadline = self._deadline
        if deadline is None or not deadline.takes(self._loop.time()):
            deadline = self._deadline = Deadline(self._loop, self._commit_timeout)
        deadline.add(future)
        try:
            return await future
        finally:
            deadline.discard()

    # -- the writer ---------------------------------------------------------------------

    async def _run_writer(self) -> None:
        inbox = self._inbox
        while True:
            if self._spill is not None:
                # Spilling: one write at a time, in order, as before the pipeline, so nothing
                # reaches the database beside a replay.
                await self._drain_in_flight()
                if not await self._spilling_turn():
                    return
                continue
            if not len(inbox):
                if inbox.closed:
                    await self._drain_in_flight()
                    if not len(inbox) and self._spill is None:
                        return  # closed and drained
                    continue
                await inbox.changed()
                continue
            if not self._pump():
                await inbox.changed()  # a put (the fill) or a write ending (a lane, or the wait rule)

    def _pump(self) -> bool:
        """Start what the queue and the free lanes allow, now; True if something started. Called by
        the writer task after a put, and by a lane the moment its write ends, so a record waiting
        for that end starts in the same turn of the loop (not after a second write has ended too)."""
        started = False
        inbox = self._inbox
        while self._spill is None and len(inbox) and self._may_start():
            batch = [item for item in inbox.take_now(self._batch_max) if not item.droppable]
            if batch:
                self._start(batch)
                started = True
        return started

    def _may_start(self) -> bool:
        """Whether the queued records start a write now. See "Pipelining" in the module docstring."""
        busy = len(self._in_flight)
        if busy == 0:
            return True
        if busy >= self._lanes:
            return False
        # A lane is free while another commits: start only if the batch is worth a commit of its own,
        # or if its oldest record has already seen one commit end (it must not wait for a second).
        return len(self._inbox) >= self._min_fill or self._inbox.oldest.queued_after < self._writes_ended

    def _start(self, batch: list[QueuedWrite]) -> None:
        ended = self._writes_ended
        waits = self.commit_waits
        for item in batch:
            waits[ended - item.queued_after] += 1
        task = self._loop.create_task(self._write_batch(batch), name="journal-write")
        self._in_flight.add(task)

    async def _write_batch(self, batch: list[QueuedWrite]) -> None:
        """One lane: write and commit the batch, then answer its callers."""
        try:
            try:
                results = await self._commit(batch)
            except Exception as exc:  # noqa: BLE001 - every failure goes to the waiters or the spill
                if self._spill_dir is not None:
                    log.error("journal database unavailable (%r): spilling to %s", exc, self._spill_dir)
                    results = self._spill_batch(batch)
                else:
                    results = [_unavailable(len(batch), exc) for _ in batch]
            for item, result in zip(batch, results):
                _settle(item.future, result)
        finally:
            self._writes_ended += 1
            self._in_flight.discard(asyncio.current_task())
            self._pump()
            self._inbox.poke()  # the writer: closing, spilling, or more to start

    async def _drain_in_flight(self) -> None:
        while self._in_flight:
            await asyncio.wait(set(self._in_flight))

    async def _spilling_turn(self) -> bool:
        """One write while a spill file exists; False once closed and drained."""
        # Replay even when nothing new is written: the spill must not wait for the next top-up.
        try:
            batch = await asyncio.wait_for(self._inbox.take(self._batch_max), SPILL_RETRY_INTERVAL)
        except asyncio.TimeoutError:
            await self._try_replay()
            return True
        if not batch:
            await self._try_replay(force=True)  # last chance at shutdown; the file stays otherwise
            return False
        batch = [item for item in batch if not item.droppable]
        if not batch:
            return True
        ended = self._writes_ended
        for item in batch:
            self.commit_waits[ended - item.queued_after] += 1
        try:
            if not await self._try_replay():
                results = self._spill_batch(batch)
            else:
                try:
                    results = await self._commit(batch)
                except Exception as exc:  # noqa: BLE001 - the database failed again: back to the spill
                    log.error("journal database unavailable (%r): spilling to %s", exc, self._spill_dir)
                    results = self._spill_batch(batch)
            for item, result in zip(batch, results):
                _settle(item.future, result)
        finally:
            self._writes_ended += 1
        return True

    async def _commit(self, batch: list[QueuedWrite]) -> list[Any]:
        """Each write's result once the batch is committed: True/False for a lone intake
        (was its key free), None for the rest, JournalRejected for a refused record."""
        store = self._store
        started = time.perf_counter()
        async with asyncio.timeout(self._attempt_timeout):
            try:
                stored = await store.write(batch)
            except store.record_errors:
                results = [_rejected(written) if isinstance(written, BaseException) else _result(item, written)
                           for item, written in zip(batch, await store.write_each(batch))]
            else:
                results = [_result(item, stored) for item in batch]
        self.batches_committed += 1
        self.commit_seconds.observe(time.perf_counter() - started)
        self.batch_records.observe(len(batch))
        return results

    # -- the spill ----------------------------------------------------------------------

    def _spill_batch(self, batch: list[QueuedWrite]) -> list[Any]:
        """Append the batch to the spill file (fsync'd) and say so to its callers."""
        if self._spill is None:
            self._spill_since = time.monotonic()
        overdue = time.monotonic() - self._spill_since > self._spill_max_seconds
        # Past the bound, new top-ups are refused; what already happened is still recorded.
        keep = [item for item in batch if not (overdue and item.claims_answer)]
        try:
            if self._spill is None:
                self._spill = SpillFile.create(self._spill_dir)
            self._spill.append([SpilledWrite(item.intake, item.outcome, item.reversal, item.reversal_update)
                                for item in keep])
        except OSError as exc:
            log.critical("journal spill file cannot be written (%r): refusing records", exc)
            return [_unavailable(len(batch), exc) for _ in batch]
        self.records_spilled += len(keep)
        results: list[Any] = []
        for item in batch:
            if item not in keep:
                results.append(JournalUnavailable(
                    f"journal database unavailable for over {self._spill_max_seconds:.0f}s: new top-ups refused"))
            else:
                # A spilled intake's dedupe key is checked again on replay (see the store's replay).
                results.append(True if item.claims_answer else None)
        return results

    async def _try_replay(self, force: bool = False) -> bool:
        """Have the store replay the spill; True once it is in (and the spill gone)."""
        now = time.monotonic()
        if not force and now - self._last_replay_attempt < SPILL_RETRY_INTERVAL:
            return False
        self._last_replay_attempt = now
        try:
            async with asyncio.timeout(self._attempt_timeout * 4):
                await self._store.replay(self._spill)
        except Exception as exc:  # noqa: BLE001 - still down: keep spilling
            log.warning("journal database still unavailable (%r); %d records in the spill", exc,
                        self.records_spilled)
            return False
        self._spill = None
        return True

    # -- state, for health and metrics ---------------------------------------------------

    @property
    def queued(self) -> int:
        """Records waiting for the writer."""
        return len(self._inbox) if self._inbox is not None else 0

    @property
    def spilling(self) -> bool:
        """True while records go to the spill file because the database cannot take them."""
        return self._spill is not None

    # -- reads (straight from the store) -----------------------------------------------

    async def try_lead(self) -> bool:
        """True while this process leads store-and-forward for the journal (one process at a time)."""
        return await self._store.try_lead()

    async def find(self, acquirer_id: str, tracking_code: str, business_day: date) -> TransactionView | None:
        """The transaction holding this dedupe key, with its latest outcome, or None."""
        return await self._read(self._store.find, acquirer_id, tracking_code, business_day)

    async def find_latest(self, acquirer_id: str, tracking_code: str) -> TransactionView | None:
        """The newest transaction that used this (acquirer, tracking code), on any business day."""
        return await self._read(self._store.find_latest, acquirer_id, tracking_code)

    async def transaction(self, txn_id: str) -> TransactionView | None:
        """One transaction by its id."""
        return await self._read(self._store.transaction, txn_id)

    async def reversal(self, txn_id: str) -> PendingReversal | None:
        """The reversal stored for this transaction, whatever its state, or None."""
        return await self._read(self._store.reversal, txn_id)

    async def reversals(self, states: tuple[str, ...] = ("pending",), limit: int = 1000) -> list[PendingReversal]:
        """Stored reversals in these states, oldest first per operator."""
        return await self._read(self._store.reversals, states, limit)

    async def orphans(self, since: datetime, until: datetime) -> list[TransactionView]:
        """Transactions routed to an operator, received in [since, until), that have no outcome at all."""
        return await self._read(self._store.orphans, since, until)

    async def states(self) -> dict[str, int]:
        """Transactions by state ("in flight" for those with no outcome yet)."""
        return await self._read(self._store.states)

    async def approved_answers(self) -> set[tuple[str, str]]:
        """(acquirer, tracking code) of every transaction answered 00, reversed since or not."""
        return await self._read(self._store.approved_answers)

    async def approved_at_operators(self) -> list[tuple]:
        """(txn_id, operator, operator_stan, operator_sent_at, tracking_code, msisdn, amount) of every
        transaction whose current state is approved (credited and not reversed)."""
        return await self._read(self._store.approved_at_operators)

    async def history(self, txn_id: str) -> list[tuple]:
        """Every outcome row of a transaction, oldest first: (ended_at, state, event, 39, operator code, ref)."""
        return await self._read(self._store.history, txn_id)

    async def count_transactions(self) -> int:
        """Rows in the transactions view."""
        return await self._read(self._store.count_transactions)

    async def summary(self) -> dict[str, int]:
        """Transactions by response code; those with no outcome yet under "pending"."""
        return await self._read(self._store.summary)

    async def outcome_rows(self, txn_id: str) -> list[Outcome]:
        """Every outcome row of a transaction (late answers included), in the order written."""
        return await self._read(self._store.outcome_rows, txn_id)

    async def search(self, query: TransactionQuery, limit: int = 50) -> list[TransactionView]:
        """Transactions matching `query`, newest first (see TransactionQuery for paging)."""
        return await self._read(self._store.search, query, limit)

    async def reversal_queue(self) -> list[ReversalQueueRow]:
        """Unsettled stored reversals (pending, failed), counted per operator and state, with the oldest."""
        return await self._read(self._store.reversal_queue)

    async def throughput(self, since: datetime) -> list[ThroughputRow]:
        """Top-ups received since `since` that reached their end, per minute and operator, oldest first."""
        return await self._read(self._store.throughput, since)

    async def ping(self) -> None:
        """Raises JournalUnavailable unless the journal takes records and its database answers a read."""
        if not self._running:
            raise JournalUnavailable("journal is not taking records")
        await self._read(self._store.ping)

    async def record_admin_event(self, actor: str, action: str, detail: str | None = None) -> None:
        """A change a person made through the admin server, with who made it; written at once (rare)."""
        await self._read(self._store.insert_admin_event, utcnow(), actor, action, detail)

    async def admin_events(self, limit: int = 100) -> list[AdminEvent]:
        """The newest admin events first."""
        return await self._read(self._store.admin_events, limit)

    async def _read(self, read: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        if not self._open:
            raise JournalUnavailable("journal is not running")
        if self._spill is not None:
            # The database lacks what the spill holds: a read now could mislead recovery or a reversal.
            raise JournalUnavailable("journal records are in the spill file, not yet replayed into the database")
        try:
            async with asyncio.timeout(self._commit_timeout):
                return await read(*args)
        except self._read_failures as exc:
            raise JournalUnavailable(f"journal read failed: {exc!r}") from exc


class Deadline:
    """The commit timeout of the records queued within DEADLINE_RESOLUTION of each other: one
    timer for all of them, fired commit_timeout after the first was queued (so no caller waits
    longer than commit_timeout, and the last may be told up to DEADLINE_RESOLUTION sooner), and
    cancelled once none of them waits any more."""

    __slots__ = ("_futures", "_waiting", "_joinable_until", "_timer", "_seconds")

    def __init__(self, loop: asyncio.AbstractEventLoop, seconds: float) -> None:
        now = loop.time()
        self._futures: list[asyncio.Future] = []
        self._waiting = 0
        self._joinable_until = now + DEADLINE_RESOLUTION
        self._seconds = seconds
        self._timer = loop.call_at(now + seconds, self._fire)

    def takes(self, now: float) -> bool:
        return now < self._joinable_until and self._timer is not None

    def add(self, future: asyncio.Future) -> None:
        self._futures.append(future)
        self._waiting += 1

    def discard(self) -> None:
        """One waiter is through (answered, timed out or cancelled)."""
        self._waiting -= 1
        if not self._waiting and self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._futures = []

    def _fire(self) -> None:
        self._timer = None
        futures, self._futures = self._futures, []
        for future in futures:
            if not future.done():
                future.set_exception(JournalUnavailable(f"not committed within {self._seconds}s"))


def _result(item: QueuedWrite, stored: set[str]) -> bool | None:
    if not item.claims_answer:
        return None  # outcome, refusal or reversal bookkeeping
    return not item.intake.uses_key or item.intake.txn_id in stored


def _rejected(exc: BaseException) -> JournalRejected:
    err = JournalRejected(f"the journal database refused this record: {exc}")
    err.__cause__ = exc
    return err


def _unavailable(batch_size: int, exc: BaseException) -> JournalUnavailable:
    # One exception object per waiter: a shared one would collect every raiser's traceback.
    err = JournalUnavailable(f"journal batch of {batch_size} not committed: {exc!r}")
    err.__cause__ = exc
    return err


def _settle(future: asyncio.Future, result: Any) -> None:
    if future.done():  # the caller gave up; its result has no one to go to
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)
