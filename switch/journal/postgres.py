"""PostgresJournal: the production journal, on PostgreSQL through asyncpg.

Owns the connection pool, the schema migration at start-up, and the group-commit
writer: one asyncio task that takes everything queued (up to batch_max), writes it in
one transaction (one ``INSERT ... SELECT FROM unnest(...)`` per table), commits, and
only then resolves each caller's future. While a batch is in flight new records queue
up and become the next batch, so the batch size follows the load with no timer.

With a spill directory configured, a batch the database cannot take (unreachable,
restarting, blocked) goes to a local fsync'd spill file instead (`spill.py`), for at
most `spill_max_seconds`; while it exists new batches follow it there, and the writer
tries once a second to replay it into the database, exactly once, before going back to
normal. Past the bound, or if the spill file cannot be written, new intakes are refused
(JournalUnavailable: the caller answers 96) while outcomes keep being spilled: they
record what already happened.

Failure handling, in short:
- queue full -> JournalOverloaded, raised at once, nothing queued;
- the database fails the batch -> every waiter of that batch gets JournalUnavailable,
  the writer drops its connection and takes a fresh one from the pool for the next batch;
- one record the database refuses (constraint, bad value) -> the batch is replayed with
  a savepoint per caller, so only that caller gets JournalRejected;
- no commit within commit_timeout -> JournalUnavailable for the waiter.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from datetime import date
from pathlib import Path
from typing import Any

import asyncpg
import msgspec

from .records import (
    Intake,
    JournalError,
    JournalOverloaded,
    JournalRejected,
    JournalUnavailable,
    Outcome,
    PendingReversal,
    QueuedWrite,
    Reversal,
    ReversalUpdate,
    TransactionView,
)
from .spill import SpilledWrite, SpillFile
from .schema import (
    INTAKE_COLUMNS,
    OUTCOME_COLUMNS,
    POSTGRES_INTAKE_TYPES,
    POSTGRES_MIGRATIONS,
    POSTGRES_OUTCOME_TYPES,
    POSTGRES_SCHEMA_VERSION_DDL,
    VIEW_COLUMNS,
)

log = logging.getLogger("airswitch.journal")

DEFAULT_SCHEMA = "public"
DEFAULT_SPILL_MAX_SECONDS = 300.0  # how long the switch may run on its spill file before refusing top-ups
SPILL_RETRY_INTERVAL = 1.0        # seconds between attempts to replay the spill into the database
ATTEMPT_TIMEOUT_CAP = 2.0         # a writer attempt gives up this soon, so callers can still be spilled
DEFAULT_BATCH_MAX = 500
DEFAULT_POOL_SIZE = 4
DEFAULT_COMMIT_TIMEOUT = 5.0  # seconds; bounds every wait: queue + commit, reads, connects
DEFAULT_QUEUE_MAX = 10_000  # queued records before record_* raise JournalOverloaded
APPLICATION_NAME = "airswitch-journal"  # how the journal shows in pg_stat_activity
# pg_advisory_xact_lock(class, hashtext(schema)): serialises migrations of one schema
# across processes. The class number only has to be unlikely to clash with other users.
MIGRATION_LOCK_CLASS = 8583
LEAD_LOCK_CLASS = 8584  # pg_try_advisory_lock(class, hashtext(schema)): one store-and-forward lead per schema

# Errors that belong to one record, not to the database: replaying the batch with a
# savepoint per caller isolates the offender. ValueError covers asyncpg's client-side
# encoding errors (asyncpg.exceptions._base.DataError is a ValueError).
_RECORD_ERRORS = (asyncpg.IntegrityConstraintViolationError, asyncpg.DataError, ValueError)

_INSERT_INTAKES = (
    f"INSERT INTO intake ({', '.join(INTAKE_COLUMNS)})"
    f" SELECT * FROM unnest({', '.join(f'${n}::{t}[]' for n, t in enumerate(POSTGRES_INTAKE_TYPES.values(), 1))})"
    # Only a clash on the dedupe key is expected and answered (False); a clash on the
    # primary key is a bug upstream and fails loudly.
    " ON CONFLICT (acquirer_id, tracking_code, business_day) WHERE uses_key DO NOTHING"
    " RETURNING txn_id"
)
_INSERT_OUTCOMES = (
    f"INSERT INTO outcome ({', '.join(OUTCOME_COLUMNS)})"
    f" SELECT * FROM unnest({', '.join(f'${n}::{t}[]' for n, t in enumerate(POSTGRES_OUTCOME_TYPES.values(), 1))})"
)
_SELECT_VIEW = f"SELECT {', '.join(VIEW_COLUMNS)} FROM transactions"
# "AND uses_key" lets the planner use the partial unique index.
_FIND = f"{_SELECT_VIEW} WHERE acquirer_id = $1 AND tracking_code = $2 AND business_day = $3 AND uses_key"
_FIND_LATEST = (f"{_SELECT_VIEW} WHERE acquirer_id = $1 AND tracking_code = $2 AND uses_key"
                " ORDER BY received_at DESC LIMIT 1")
_FIND_TXN = f"{_SELECT_VIEW} WHERE txn_id = $1"
_INSERT_REVERSALS = (
    "INSERT INTO reversal (txn_id, operator_id, reason, created_at, next_attempt_at)"
    " SELECT t, o, r, c, c FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[]) AS u(t, o, r, c)"
    " ON CONFLICT (txn_id) DO NOTHING"
)
_UPDATE_REVERSAL = (
    "UPDATE reversal SET state = $2, attempts = $3, next_attempt_at = $4, last_error = $5, operator_code = $6"
    " WHERE txn_id = $1"
)
_PENDING_COLUMNS = ("r.txn_id, r.operator_id, r.reason, r.state, r.attempts, r.created_at, r.next_attempt_at,"
                    " r.last_error, i.acquirer_id, i.tracking_code, i.msisdn, i.amount, i.currency,"
                    " i.operator_stan, i.operator_sent_at")
_REVERSALS = (f"SELECT {_PENDING_COLUMNS} FROM reversal r JOIN intake i USING (txn_id)"
              " WHERE r.state = ANY($1::text[]) ORDER BY r.operator_id, r.created_at LIMIT $2")
_ORPHANS = (
    f"{_SELECT_VIEW} WHERE routed_operator IS NOT NULL AND state IS NULL"
    " AND received_at >= $1 AND received_at < $2 ORDER BY received_at"
)
_STATES = "SELECT coalesce(state, 'in flight'), count(*) FROM transactions GROUP BY 1"
_APPROVED_AT_OPERATORS = (
    "SELECT txn_id, routed_operator, operator_stan, operator_sent_at, tracking_code, msisdn, amount"
    " FROM transactions WHERE state = 'approved' ORDER BY received_at"
)
_APPROVED_ANSWERS = "SELECT acquirer_id, tracking_code FROM transactions WHERE response_code = '00'"
_HISTORY = ("SELECT ended_at, state, event, response_code, operator_code, operator_ref FROM outcome"
            " WHERE txn_id = $1 ORDER BY ended_at, id")
_COUNT = "SELECT count(*) FROM transactions"
_SUMMARY = "SELECT coalesce(response_code, 'pending') AS code, count(*) FROM transactions GROUP BY 1"


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class _Inbox:
    """The bounded queue between callers and the writer task (both on the event loop)."""

    def __init__(self, capacity: int) -> None:
        self._items: collections.deque[QueuedWrite] = collections.deque()
        self._capacity = capacity
        self._wakeup = asyncio.Event()
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: QueuedWrite) -> None:
        if len(self._items) >= self._capacity:
            raise JournalOverloaded(f"journal queue full ({self._capacity} records waiting)")
        self._items.append(item)
        self._wakeup.set()

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


class PostgresJournal:
    """The transaction journal on PostgreSQL. See the module docstring."""

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = DEFAULT_SCHEMA,
        batch_max: int = DEFAULT_BATCH_MAX,
        pool_size: int = DEFAULT_POOL_SIZE,
        commit_timeout: float = DEFAULT_COMMIT_TIMEOUT,
        queue_max: int = DEFAULT_QUEUE_MAX,
        spill_dir: str | Path | None = None,
        spill_max_seconds: float = DEFAULT_SPILL_MAX_SECONDS,
    ) -> None:
        if batch_max < 1 or queue_max < 1:
            raise ValueError("batch_max and queue_max must be >= 1")
        if pool_size < 2:
            # One connection belongs to the writer; reads need at least one more.
            raise ValueError("pool_size must be >= 2")
        self._dsn = dsn
        self._schema = schema
        self._batch_max = batch_max
        self._pool_size = pool_size
        self._commit_timeout = commit_timeout
        self._queue_max = queue_max
        self._pool: asyncpg.Pool | None = None
        self._inbox: _Inbox | None = None
        self._writer: asyncio.Task | None = None
        self._writer_conn: asyncpg.Connection | None = None
        self._running = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.batches_committed = 0  # transactions committed by the writer (for tests/metrics)
        self._spill_dir = Path(spill_dir) if spill_dir is not None else None
        self._spill_max_seconds = spill_max_seconds
        self._spill: SpillFile | None = None
        self._spill_since = 0.0
        self._last_replay_attempt = 0.0
        self._attempt_timeout = min(commit_timeout / 2, ATTEMPT_TIMEOUT_CAP)
        self.records_spilled = 0  # for tests/metrics
        self._lead_conn: asyncpg.Connection | None = None

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, create the schema if missing, apply missing migrations, start the writer.
        A no-op if already running."""
        if self._running:
            return
        self._loop = asyncio.get_running_loop()
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn,
                min_size=1,
                max_size=self._pool_size,
                timeout=self._commit_timeout,
                server_settings={
                    "search_path": _quote_ident(self._schema),
                    "application_name": APPLICATION_NAME,
                },
            )
        except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise JournalUnavailable(f"cannot connect to the journal database: {exc!r}") from exc
        try:
            async with self._pool.acquire() as conn:
                await self._migrate(conn)
                # What a previous run spilled and did not replay goes in before anything new.
                for spill in SpillFile.existing(self._spill_dir) if self._spill_dir else []:
                    await self._replay(conn, spill)
        except BaseException:
            await self._pool.close()
            self._pool = None
            raise
        self._inbox = _Inbox(self._queue_max)
        self._writer = asyncio.create_task(self._run_writer(), name="journal-postgres-writer")
        self._running = True

    async def _migrate(self, conn: asyncpg.Connection) -> None:
        schema = _quote_ident(self._schema)
        async with conn.transaction():
            # Two processes starting at once: the second waits here, then finds the
            # migrations applied.
            await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", MIGRATION_LOCK_CLASS, self._schema)
            # Check first: CREATE SCHEMA needs the CREATE privilege on the database even
            # with IF NOT EXISTS, and a production role may not have it.
            if not await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", self._schema):
                await conn.execute(f"CREATE SCHEMA {schema}")
            await conn.execute(f"SET LOCAL search_path TO {schema}")
            await conn.execute(POSTGRES_SCHEMA_VERSION_DDL)
            current = await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version")
            if current > len(POSTGRES_MIGRATIONS):
                raise JournalError(
                    f"journal schema {self._schema!r} is at version {current}, newer than this"
                    f" code knows ({len(POSTGRES_MIGRATIONS)}); refusing to run against it"
                )
            for version, statements in enumerate(POSTGRES_MIGRATIONS[current:], start=current + 1):
                for statement in statements:
                    await conn.execute(statement)
                await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", version)

    async def try_lead(self) -> bool:
        """True while this process holds the store-and-forward lead of this schema: a session advisory
        lock on a connection of its own, released by Postgres if the process or the connection dies."""
        conn = self._lead_conn
        if conn is not None and not conn.is_closed():
            return True
        try:
            conn = await asyncpg.connect(self._dsn, timeout=self._commit_timeout,
                                         server_settings={"application_name": APPLICATION_NAME + "-lead"})
        except (OSError, asyncio.TimeoutError, asyncpg.PostgresError) as exc:
            raise JournalUnavailable(f"cannot connect for the lead: {exc!r}") from exc
        if await conn.fetchval("SELECT pg_try_advisory_lock($1, hashtext($2))", LEAD_LOCK_CLASS, self._schema):
            self._lead_conn = conn
            return True
        await conn.close()
        return False

    async def close(self) -> None:
        """Flush everything queued, stop the writer, close the pool. Idempotent."""
        if self._lead_conn is not None:
            self._lead_conn.terminate()
            self._lead_conn = None
        if not self._running:
            return
        self._running = False  # refuse new records; queued ones are still written
        assert self._inbox is not None and self._writer is not None and self._pool is not None
        self._inbox.close()
        await self._writer
        conn, self._writer_conn = self._writer_conn, None
        if conn is not None and _is_open(conn):
            await self._pool.release(conn)  # healthy: hand it back for a graceful close
        try:
            await asyncio.wait_for(self._pool.close(), self._commit_timeout)
        except asyncio.TimeoutError:
            self._pool.terminate()  # a read is stuck; do not hang shutdown on it
        self._pool = None

    async def __aenter__(self) -> PostgresJournal:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def dsn(self) -> str:
        return self._dsn

    @property
    def schema(self) -> str:
        return self._schema

    @property
    def writer_pid(self) -> int | None:
        """Backend pid of the writer's connection (find it in pg_stat_activity)."""
        conn = self._writer_conn
        return conn.get_server_pid() if conn is not None and _is_open(conn) else None

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
        item = QueuedWrite(intake, outcome, self._loop.create_future(), reversal, update)
        self._inbox.put(item)  # JournalOverloaded when full
        # A timer on the future rather than asyncio.timeout (cheaper per record). On timeout, or if
        # the caller is cancelled, the future is done before the writer takes it, which it sees.
        timer = self._loop.call_later(self._commit_timeout, _time_out, item.future, self._commit_timeout)
        try:
            return await item.future
        finally:
            timer.cancel()

    # -- the writer ---------------------------------------------------------------------

    async def _run_writer(self) -> None:
        while True:
            if self._spill is not None:
                # Replay even when nothing new is written: the spill must not wait for the next top-up.
                try:
                    batch = await asyncio.wait_for(self._inbox.take(self._batch_max), SPILL_RETRY_INTERVAL)
                except asyncio.TimeoutError:
                    await self._try_replay()
                    continue
            else:
                batch = await self._inbox.take(self._batch_max)
            if not batch:
                if self._spill is not None:
                    await self._try_replay(force=True)  # last chance at shutdown; the file stays otherwise
                return  # closed and drained
            # A lone intake whose caller already gave up is not written (see QueuedWrite).
            batch = [item for item in batch if not (item.future.done() and item.outcome is None
                                                    and item.reversal_update is None)]
            if not batch:
                continue
            if self._spill is not None and not await self._try_replay():
                results = self._spill_batch(batch, None)
            else:
                try:
                    results = await self._commit_batch(batch)
                except Exception as exc:  # noqa: BLE001 - every failure goes to the waiters or the spill
                    # Whatever went wrong, the connection may be mid-transaction or dead:
                    # start the next batch on a fresh one.
                    self._drop_writer_conn()
                    if self._spill_dir is not None:
                        log.error("journal database unavailable (%r): spilling to %s", exc, self._spill_dir)
                        results = self._spill_batch(batch, exc)
                    else:
                        results = [_unavailable(len(batch), exc) for _ in batch]
            for item, result in zip(batch, results):
                _settle(item.future, result)

    # -- the spill ----------------------------------------------------------------------

    def _spill_batch(self, batch: list[QueuedWrite], cause: BaseException | None) -> list[Any]:
        """Append the batch to the spill file (fsync'd) and say so to its callers."""
        if self._spill is None:
            self._spill_since = time.monotonic()
        overdue = time.monotonic() - self._spill_since > self._spill_max_seconds
        # Past the bound, new top-ups are refused; what already happened is still recorded.
        keep = [item for item in batch if not (overdue and item.intake is not None and item.outcome is None)]
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
                # A spilled intake's dedupe key is checked again on replay (see _replay).
                results.append(True if item.intake is not None and item.outcome is None else None)
        return results

    async def _try_replay(self, force: bool = False) -> bool:
        """Replay the spill into the database; True once it is in (and the spill gone)."""
        now = time.monotonic()
        if not force and now - self._last_replay_attempt < SPILL_RETRY_INTERVAL:
            return False
        self._last_replay_attempt = now
        try:
            async with asyncio.timeout(self._attempt_timeout * 4):
                async with self._pool.acquire() as conn:
                    await self._replay(conn, self._spill)
        except Exception as exc:  # noqa: BLE001 - still down: keep spilling
            log.warning("journal database still unavailable (%r); %d records in the spill", exc,
                        self.records_spilled)
            return False
        self._spill = None
        return True

    async def _replay(self, conn: asyncpg.Connection, spill: SpillFile) -> None:
        """Apply one spill file exactly once, then delete it."""
        writes = spill.read()
        async with conn.transaction():
            done = await conn.fetchval("SELECT 1 FROM spill_replayed WHERE segment = $1", spill.segment)
            if not done:
                for start in range(0, len(writes), REPLAY_CHUNK):
                    await _replay_chunk(conn, writes[start:start + REPLAY_CHUNK])
                await conn.execute("INSERT INTO spill_replayed (segment, records) VALUES ($1, $2)",
                                   spill.segment, len(writes))
        spill.remove()
        log.warning("journal: replayed %d spilled records from %s into the database", len(writes),
                    spill.path.name)

    async def _commit_batch(self, batch: list[QueuedWrite]) -> list[Any]:
        async with asyncio.timeout(self._attempt_timeout if self._spill_dir else self._commit_timeout):
            conn = self._writer_conn
            if conn is None or not _is_open(conn):
                # Nothing has been sent yet, so taking another connection is safe.
                self._drop_writer_conn()
                conn = self._writer_conn = await self._pool.acquire()
            try:
                async with conn.transaction():
                    stored = await self._write(conn, batch)
            except _RECORD_ERRORS:
                results = await self._commit_isolated(conn, batch)
            else:
                results = [_result(item, stored) for item in batch]
            self.batches_committed += 1
            return results

    async def _commit_isolated(self, conn: asyncpg.Connection, batch: list[QueuedWrite]) -> list[Any]:
        """Replay a batch that one bad record failed: a savepoint per caller, one commit."""
        results: list[Any] = []
        async with conn.transaction():
            for item in batch:
                try:
                    async with conn.transaction():  # nested: a savepoint
                        stored = await self._write(conn, [item])
                except _RECORD_ERRORS as exc:
                    err = JournalRejected(f"the journal database refused this record: {exc}")
                    err.__cause__ = exc
                    results.append(err)
                else:
                    results.append(_result(item, stored))
        return results

    @staticmethod
    async def _write(conn: asyncpg.Connection, batch: list[QueuedWrite]) -> set[str]:
        """Insert the batch's rows; return the txn_ids of the intakes actually stored."""
        intakes = [msgspec.structs.astuple(item.intake) for item in batch if item.intake is not None]
        outcomes = [msgspec.structs.astuple(item.outcome) for item in batch if item.outcome is not None]
        stored: set[str] = set()
        # Intakes first: the outcome of a refusal in this batch references its intake.
        if intakes:
            rows = await conn.fetch(_INSERT_INTAKES, *zip(*intakes))
            stored = {row[0] for row in rows}
        if outcomes:
            # Binary COPY: outcomes never conflict, and COPY costs far less client CPU than unnest arrays.
            await conn.copy_records_to_table("outcome", records=outcomes, columns=OUTCOME_COLUMNS)
        reversals = [msgspec.structs.astuple(item.reversal) for item in batch if item.reversal is not None]
        if reversals:
            await conn.execute(_INSERT_REVERSALS, *zip(*reversals))
        updates = [msgspec.structs.astuple(item.reversal_update) for item in batch
                   if item.reversal_update is not None]
        if updates:
            await conn.executemany(_UPDATE_REVERSAL, updates)
        return stored

    def _drop_writer_conn(self) -> None:
        conn, self._writer_conn = self._writer_conn, None
        if conn is None or not _is_open(conn):
            return  # asyncpg has already handed a closed connection back to the pool
        # Never reuse it: after a failure it may be inside a broken transaction.
        # terminate() also returns it to the pool, which replaces it.
        conn.terminate()

    # -- reads (straight from the database, on any pooled connection) ----------------

    async def find(self, acquirer_id: str, tracking_code: str, business_day: date) -> TransactionView | None:
        """The transaction holding this dedupe key, with its latest outcome, or None."""
        row = await self._read("fetchrow", _FIND, acquirer_id, tracking_code, business_day)
        return None if row is None else TransactionView(*row)

    async def find_latest(self, acquirer_id: str, tracking_code: str) -> TransactionView | None:
        """The newest transaction that used this (acquirer, tracking code), on any business day."""
        row = await self._read("fetchrow", _FIND_LATEST, acquirer_id, tracking_code)
        return None if row is None else TransactionView(*row)

    async def transaction(self, txn_id: str) -> TransactionView | None:
        row = await self._read("fetchrow", _FIND_TXN, txn_id)
        return None if row is None else TransactionView(*row)

    async def reversals(self, states: tuple[str, ...] = ("pending",), limit: int = 1000) -> list[PendingReversal]:
        """Stored reversals in these states, oldest first per operator."""
        rows = await self._read("fetch", _REVERSALS, list(states), limit)
        return [PendingReversal(*row) for row in rows]

    async def orphans(self, since, until) -> list[TransactionView]:
        """Transactions routed to an operator, received in [since, until), that have no outcome at all."""
        rows = await self._read("fetch", _ORPHANS, since, until)
        return [TransactionView(*row) for row in rows]

    async def states(self) -> dict[str, int]:
        """Transactions by state ("in flight" for those with no outcome yet)."""
        return {state: count for state, count in await self._read("fetch", _STATES)}

    async def approved_at_operators(self) -> list[tuple]:
        """(txn_id, operator, operator_stan, operator_sent_at, tracking_code, msisdn, amount) of every
        transaction whose current state is approved (credited and not reversed)."""
        return [tuple(row) for row in await self._read("fetch", _APPROVED_AT_OPERATORS)]

    async def approved_answers(self) -> set[tuple[str, str]]:
        """(acquirer, tracking code) of every transaction answered 00, reversed since or not."""
        return {tuple(row) for row in await self._read("fetch", _APPROVED_ANSWERS)}

    async def history(self, txn_id: str) -> list[tuple]:
        """Every outcome row of a transaction, oldest first: (ended_at, state, event, 39, operator code, ref)."""
        return [tuple(row) for row in await self._read("fetch", _HISTORY, txn_id)]

    async def count_transactions(self) -> int:
        return await self._read("fetchval", _COUNT)

    async def summary(self) -> dict[str, int]:
        """Transactions by response code; those with no outcome yet under "pending"."""
        rows = await self._read("fetch", _SUMMARY)
        return {code: count for code, count in rows}

    async def _read(self, method: str, query: str, *args: Any) -> Any:
        if self._pool is None:
            raise JournalUnavailable("journal is not running")
        if self._spill is not None:
            # Postgres lacks what the spill holds: a read now could mislead recovery or a reversal.
            raise JournalUnavailable("journal records are in the spill file, not yet replayed into Postgres")
        try:
            async with asyncio.timeout(self._commit_timeout):
                async with self._pool.acquire() as conn:
                    return await getattr(conn, method)(query, *args)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise JournalUnavailable(f"journal read failed: {exc!r}") from exc


REPLAY_CHUNK = 5000
_REPLAY_INTAKES = (
    f"INSERT INTO intake ({', '.join(INTAKE_COLUMNS)})"
    f" SELECT * FROM unnest({', '.join(f'${n}::{t}[]' for n, t in enumerate(POSTGRES_INTAKE_TYPES.values(), 1))})"
    " ON CONFLICT DO NOTHING RETURNING txn_id"
)
_REPLAY_OUTCOMES = (
    f"INSERT INTO outcome ({', '.join(OUTCOME_COLUMNS)})"
    f" SELECT * FROM unnest({', '.join(f'${n}::{t}[]' for n, t in enumerate(POSTGRES_OUTCOME_TYPES.values(), 1))})"
    f" AS u({', '.join(OUTCOME_COLUMNS)})"
    " WHERE NOT EXISTS (SELECT 1 FROM outcome o WHERE o.txn_id = u.txn_id AND o.ended_at = u.ended_at"
    " AND o.state = u.state AND o.event = u.event)"
)


async def _replay_chunk(conn: asyncpg.Connection, writes: list[SpilledWrite]) -> None:
    """Insert spilled records so that a record already in the database is not inserted again."""
    intakes = [w.intake for w in writes if w.intake is not None]
    if intakes:
        stored = {row[0] for row in await conn.fetch(_REPLAY_INTAKES, *zip(*map(msgspec.structs.astuple, intakes)))}
        missing = [i for i in intakes if i.txn_id not in stored]
        present = {row[0] for row in await conn.fetch("SELECT txn_id FROM intake WHERE txn_id = ANY($1::text[])",
                                                     [i.txn_id for i in missing])} if missing else set()
        clashes = [msgspec.structs.replace(i, uses_key=False) for i in missing if i.txn_id not in present]
        for intake in clashes:
            log.critical("txn %s: duplicate top-up (%s, %s) was accepted while the journal was unreachable; "
                         "stored without the dedupe key for reconciliation", intake.txn_id, intake.acquirer_id,
                         intake.tracking_code)
        if clashes:
            await conn.fetch(_REPLAY_INTAKES, *zip(*map(msgspec.structs.astuple, clashes)))
    outcomes = [msgspec.structs.astuple(w.outcome) for w in writes if w.outcome is not None]
    if outcomes:
        await conn.execute(_REPLAY_OUTCOMES, *zip(*outcomes))
    reversals = [msgspec.structs.astuple(w.reversal) for w in writes if w.reversal is not None]
    if reversals:
        await conn.execute(_INSERT_REVERSALS, *zip(*reversals))
    updates = [msgspec.structs.astuple(w.update) for w in writes if w.update is not None]
    if updates:
        await conn.executemany(_UPDATE_REVERSAL, updates)


def _time_out(future: asyncio.Future, seconds: float) -> None:
    if not future.done():
        future.set_exception(JournalUnavailable(f"not committed within {seconds}s"))


def _is_open(conn: asyncpg.Connection) -> bool:
    try:
        return not conn.is_closed()
    except asyncpg.InterfaceError:
        # When a pooled connection closes, asyncpg releases it to the pool itself and
        # the proxy we hold refuses every call.
        return False


def _result(item: QueuedWrite, stored: set[str]) -> bool | None:
    if item.intake is None or item.outcome is not None:
        return None  # outcome, refusal or reversal bookkeeping
    return not item.intake.uses_key or item.intake.txn_id in stored


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
