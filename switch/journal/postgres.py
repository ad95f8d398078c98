"""PostgresJournal: the production journal, on PostgreSQL through asyncpg.

The journal core (core.py) does the queueing, group commit, timeouts and spilling; this
module is its store. It owns the connection pool, the schema migration at start-up, the
writers' connections, how a batch becomes rows, how a spill file is replayed exactly once,
the store-and-forward lead (an advisory lock), and the reads.

A batch: intakes by binary COPY straight into ``intake``; if that fails on the dedupe key
(a key already taken, or claimed twice in the batch: rare, the switch's dedupe window
turns most duplicates away first) the transaction is rolled back and the batch written
again with one ``INSERT ... SELECT FROM unnest(...) ON CONFLICT ... DO NOTHING RETURNING
txn_id``, which answers exactly which keys were free. Either way a caller's True means
its row is committed and False that nothing of it was. Outcomes by binary COPY, reversals
by unnest. Intakes are written first: the outcome of a refusal in the same batch
references its intake.

Two writer connections (``writers``), so the core can commit one batch while the next is
written. Two batches in flight may claim the same dedupe key (or two processes' may):
each batch claims keys in key order, so one waits for the other's commit instead of the
two deadlocking; within a batch the earliest queued of a key wins.
"""

from __future__ import annotations

import asyncio
import logging
import operator
from datetime import date, datetime
from pathlib import Path
from typing import Any

import asyncpg
import msgspec

from .core import (
    DEFAULT_BATCH_MAX,
    DEFAULT_COMMIT_TIMEOUT,
    DEFAULT_PIPELINE_MIN_FILL,
    DEFAULT_QUEUE_MAX,
    DEFAULT_SPILL_MAX_SECONDS,
    JournalCore,
    QueuedWrite,
)
from .records import (
    AdminEvent,
    JournalError,
    JournalUnavailable,
    Outcome,
    PendingReversal,
    ReversalQueueRow,
    ThroughputRow,
    TransactionQuery,
    TransactionView,
)
from .schema import (
    APPROVED_ANSWERS,
    APPROVED_AT_OPERATORS,
    COUNT_BY_STATE,
    COUNT_TRANSACTIONS,
    FIND,
    FIND_LATEST,
    FIND_REVERSAL,
    FIND_TXN,
    HISTORY,
    INTAKE_COLUMNS,
    ORPHANS,
    OUTCOME_COLUMNS,
    OUTCOMES,
    PING,
    ADMIN_EVENTS,
    INSERT_ADMIN_EVENT,
    POSTGRES_INTAKE_TYPES,
    POSTGRES_MIGRATIONS,
    POSTGRES_OUTCOME_TYPES,
    POSTGRES_SCHEMA_VERSION_DDL,
    REVERSAL_QUEUE,
    REVERSALS_ORDER,
    SELECT_REVERSAL,
    SUMMARY,
    THROUGHPUT_POSTGRES,
    search_query,
)
from .spill import SpilledWrite, SpillFile

log = logging.getLogger("airswitch.journal")

DEFAULT_SCHEMA = "public"
DEFAULT_POOL_SIZE = 4
DEFAULT_WRITERS = 2     # writer connections, so one batch is written while another commits
APPLICATION_NAME = "airswitch-journal"  # how the journal shows in pg_stat_activity
# pg_advisory_xact_lock(class, hashtext(schema)): serialises migrations of one schema
# across processes. The class number only has to be unlikely to clash with other users.
MIGRATION_LOCK_CLASS = 8583
LEAD_LOCK_CLASS = 8584  # pg_try_advisory_lock(class, hashtext(schema)): one store-and-forward lead per schema
REPLAY_CHUNK = 5000     # spilled writes per statement when a spill file is replayed


def _unnest(types: dict[str, str]) -> str:
    return f"unnest({', '.join(f'${n}::{t}[]' for n, t in enumerate(types.values(), 1))})"


_KEY_CONSTRAINT = "intake_key_uq"
_INSERT_INTAKES = (
    f"INSERT INTO intake ({', '.join(INTAKE_COLUMNS)})"
    f" SELECT {', '.join(INTAKE_COLUMNS)} FROM {_unnest(POSTGRES_INTAKE_TYPES)}"
    f" WITH ORDINALITY AS u({', '.join(INTAKE_COLUMNS)}, seq)"
    # Key order: two batches in flight (or two processes) claiming the same keys wait for each
    # other in one order, never in a cycle. seq: within a batch the first queued of a key wins.
    " ORDER BY acquirer_id, tracking_code, business_day, seq"
    # Only a clash on the dedupe key is expected and answered (False); a clash on the
    # primary key is a bug upstream and fails loudly.
    " ON CONFLICT (acquirer_id, tracking_code, business_day) WHERE uses_key DO NOTHING"
    " RETURNING txn_id"
)
_INSERT_REVERSALS = (
    "INSERT INTO reversal (txn_id, operator_id, reason, created_at, next_attempt_at)"
    " SELECT t, o, r, c, c FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[]) AS u(t, o, r, c)"
    " ON CONFLICT (txn_id) DO NOTHING"
)
_UPDATE_REVERSAL = (
    "UPDATE reversal SET state = $2, attempts = $3, next_attempt_at = $4, last_error = $5, operator_code = $6"
    " WHERE txn_id = $1"
)
_REVERSALS = f"{SELECT_REVERSAL} WHERE r.state = ANY($1::text[]){REVERSALS_ORDER} LIMIT $2"
# Replay inserts only what the database lacks: a batch whose commit reached the database
# but whose acknowledgement did not (a cut connection) was spilled all the same.
_REPLAY_INTAKES = (
    f"INSERT INTO intake ({', '.join(INTAKE_COLUMNS)}) SELECT * FROM {_unnest(POSTGRES_INTAKE_TYPES)}"
    " ON CONFLICT DO NOTHING RETURNING txn_id"
)
_REPLAY_OUTCOMES = (
    f"INSERT INTO outcome ({', '.join(OUTCOME_COLUMNS)})"
    f" SELECT * FROM {_unnest(POSTGRES_OUTCOME_TYPES)} AS u({', '.join(OUTCOME_COLUMNS)})"
    " WHERE NOT EXISTS (SELECT 1 FROM outcome o WHERE o.txn_id = u.txn_id AND o.ended_at = u.ended_at"
    " AND o.state = u.state AND o.event = u.event)"
)


_txn_id = operator.itemgetter(0)  # a Reversal's or ReversalUpdate's txn_id, as a tuple
# An intake tuple's (acquirer_id, tracking_code, business_day), intake_key_uq's column order.
_dedupe_key = operator.itemgetter(*(INTAKE_COLUMNS.index(c) for c in ("acquirer_id", "tracking_code", "business_day")))


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class PostgresJournal(JournalCore):
    """The transaction journal on PostgreSQL: the journal core on a PostgresStore."""

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = DEFAULT_SCHEMA,
        batch_max: int = DEFAULT_BATCH_MAX,
        pool_size: int = DEFAULT_POOL_SIZE,
        writers: int = DEFAULT_WRITERS,
        commit_timeout: float = DEFAULT_COMMIT_TIMEOUT,
        queue_max: int = DEFAULT_QUEUE_MAX,
        spill_dir: str | Path | None = None,
        spill_max_seconds: float = DEFAULT_SPILL_MAX_SECONDS,
        pipeline_min_fill: int = DEFAULT_PIPELINE_MIN_FILL,
    ) -> None:
        self._postgres = PostgresStore(dsn, schema=schema, pool_size=pool_size, writers=writers,
                                       timeout=commit_timeout)
        super().__init__(self._postgres, batch_max=batch_max, commit_timeout=commit_timeout, queue_max=queue_max,
                         spill_dir=spill_dir, spill_max_seconds=spill_max_seconds,
                         pipeline_min_fill=pipeline_min_fill)

    @property
    def dsn(self) -> str:
        return self._postgres.dsn

    @property
    def schema(self) -> str:
        """The Postgres schema holding the journal (the float ledger lives beside it)."""
        return self._postgres.schema

    @property
    def writer_pid(self) -> int | None:
        """Backend pid of the first writer connection, the one a batch takes when the writer
        is idle (find it in pg_stat_activity)."""
        return self._postgres.writer_pid

    @property
    def writer_pids(self) -> list[int | None]:
        """Backend pids of all the writer connections (None: not connected)."""
        return self._postgres.writer_pids


class PostgresStore:
    """The journal's tables in one Postgres schema. See the module docstring."""

    # Errors that belong to one record, not to the database. ValueError covers asyncpg's
    # client-side encoding errors (asyncpg.exceptions._base.DataError is a ValueError).
    record_errors = (asyncpg.IntegrityConstraintViolationError, asyncpg.DataError, ValueError)
    read_errors = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)

    def __init__(self, dsn: str, *, schema: str, pool_size: int, timeout: float,
                 writers: int = DEFAULT_WRITERS) -> None:
        if writers < 1 or pool_size < 2:
            # Each writer holds a connection of the pool; reads need at least one more.
            raise ValueError(f"need writers >= 1 and pool_size >= 2 (got {writers}, {pool_size})")
        writers = min(writers, pool_size - 1)  # a small pool gets fewer writers, never no reads
        self._dsn = dsn
        self._schema = schema
        self._pool_size = pool_size
        self._timeout = timeout
        self._pool: asyncpg.Pool | None = None
        self.writers = writers
        # One slot a writer: its connection (kept between batches) and whether a write is using it.
        self._writer_conns: list[asyncpg.Connection | None] = [None] * writers
        self._writer_busy = [False] * writers
        self._lead_conn: asyncpg.Connection | None = None

    # -- lifecycle ----------------------------------------------------------------------

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn,
                min_size=1,
                max_size=self._pool_size,
                timeout=self._timeout,
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
        except BaseException:
            await self._pool.close()
            self._pool = None
            raise

    async def _migrate(self, conn: asyncpg.Connection) -> None:
        schema_name = _quote_ident(self._schema)
        async with conn.transaction():
            # Two processes starting at once: the second waits here, then finds the
            # migrations applied.
            await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", MIGRATION_LOCK_CLASS, self._schema)
            # Check first: CREATE SCHEMA needs the CREATE privilege on the database even
            # with IF NOT EXISTS, and a production role may not have it.
            if not await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", self._schema):
                await conn.execute(f"CREATE SCHEMA {schema_name}")
            await conn.execute(f"SET LOCAL search_path TO {schema_name}")
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

    async def close(self) -> None:
        if self._lead_conn is not None:
            self._lead_conn.terminate()
            self._lead_conn = None
        if self._pool is None:
            return
        for slot, conn in enumerate(self._writer_conns):
            self._writer_conns[slot] = None
            if conn is not None and _is_open(conn):
                await self._pool.release(conn)  # healthy: hand it back for a graceful close
        try:
            await asyncio.wait_for(self._pool.close(), self._timeout)
        except asyncio.TimeoutError:
            self._pool.terminate()  # a read is stuck; do not hang shutdown on it
        self._pool = None

    async def try_lead(self) -> bool:
        """True while this process holds the store-and-forward lead of this schema: a session advisory
        lock on a connection of its own, released by Postgres if the process or the connection dies."""
        conn = self._lead_conn
        if conn is not None and not conn.is_closed():
            return True
        try:
            conn = await asyncpg.connect(self._dsn, timeout=self._timeout,
                                         server_settings={"application_name": APPLICATION_NAME + "-lead"})
        except (OSError, asyncio.TimeoutError, asyncpg.PostgresError) as exc:
            raise JournalUnavailable(f"cannot connect for the lead: {exc!r}") from exc
        if await conn.fetchval("SELECT pg_try_advisory_lock($1, hashtext($2))", LEAD_LOCK_CLASS, self._schema):
            self._lead_conn = conn
            return True
        await conn.close()
        return False

    @property
    def dsn(self) -> str:
        return self._dsn

    @property
    def schema(self) -> str:
        return self._schema

    @property
    def writer_pid(self) -> int | None:
        return self.writer_pids[0]

    @property
    def writer_pids(self) -> list[int | None]:
        return [conn.get_server_pid() if conn is not None and _is_open(conn) else None
                for conn in self._writer_conns]

    # -- writes (up to `writers` at once, each on its own connection, kept between batches) -----

    async def write(self, batch: list[QueuedWrite]) -> set[str]:
        slot = self._claim_writer()
        try:
            conn = await self._writer(slot)
            try:
                async with conn.transaction():
                    return await _insert(conn, batch, copy_intakes=True)
            except asyncpg.UniqueViolationError as exc:
                if exc.constraint_name != _KEY_CONSTRAINT:
                    raise
            # A dedupe key of the batch is taken: rolled back; again, answering record by record.
            async with conn.transaction():
                return await _insert(conn, batch, copy_intakes=False)
        except self.record_errors:
            raise  # rolled back; the connection is fine
        except BaseException:
            self._drop_writer_conn(slot)
            raise
        finally:
            self._writer_busy[slot] = False

    async def write_each(self, batch: list[QueuedWrite]) -> list[set[str] | BaseException]:
        slot = self._claim_writer()
        results: list[set[str] | BaseException] = []
        try:
            conn = await self._writer(slot)
            async with conn.transaction():
                for item in batch:
                    try:
                        async with conn.transaction():  # nested: a savepoint
                            results.append(await _insert(conn, [item], copy_intakes=False))
                    except self.record_errors as exc:
                        results.append(exc)
        except BaseException:
            self._drop_writer_conn(slot)
            raise
        finally:
            self._writer_busy[slot] = False
        return results

    def _claim_writer(self) -> int:
        # The first free slot: an idle journal always writes on the first connection.
        for slot, busy in enumerate(self._writer_busy):
            if not busy:
                self._writer_busy[slot] = True
                return slot
        raise RuntimeError(f"more than {self.writers} journal writes at once")  # the core never does this

    async def _writer(self, slot: int) -> asyncpg.Connection:
        conn = self._writer_conns[slot]
        if conn is None or not _is_open(conn):
            # Nothing has been sent yet, so taking another connection is safe.
            self._drop_writer_conn(slot)
            conn = self._writer_conns[slot] = await self._pool.acquire()
        return conn

    def _drop_writer_conn(self, slot: int) -> None:
        conn, self._writer_conns[slot] = self._writer_conns[slot], None
        if conn is None or not _is_open(conn):
            return  # asyncpg has already handed a closed connection back to the pool
        # Never reuse it: after a failure it may be inside a broken transaction.
        # terminate() also returns it to the pool, which replaces it.
        conn.terminate()

    async def replay(self, spill: SpillFile) -> None:
        writes = spill.read()
        async with self._pool.acquire() as conn, conn.transaction():
            done = await conn.fetchval("SELECT 1 FROM spill_replayed WHERE segment = $1", spill.segment)
            if not done:
                for start in range(0, len(writes), REPLAY_CHUNK):
                    await _replay_chunk(conn, writes[start:start + REPLAY_CHUNK])
                await conn.execute("INSERT INTO spill_replayed (segment, records) VALUES ($1, $2)",
                                   spill.segment, len(writes))
        spill.remove()
        log.warning("journal: replayed %d spilled records from %s into the database", len(writes),
                    spill.path.name)

    # -- reads (any pooled connection) ----------------------------------------------------

    async def find(self, acquirer_id: str, tracking_code: str, business_day: date) -> TransactionView | None:
        return _view_or_none(await self._fetch("fetchrow", FIND, acquirer_id, tracking_code, business_day))

    async def find_latest(self, acquirer_id: str, tracking_code: str) -> TransactionView | None:
        return _view_or_none(await self._fetch("fetchrow", FIND_LATEST, acquirer_id, tracking_code))

    async def transaction(self, txn_id: str) -> TransactionView | None:
        return _view_or_none(await self._fetch("fetchrow", FIND_TXN, txn_id))

    async def reversal(self, txn_id: str) -> PendingReversal | None:
        row = await self._fetch("fetchrow", FIND_REVERSAL, txn_id)
        return None if row is None else PendingReversal(*row)

    async def reversals(self, states: tuple[str, ...], limit: int) -> list[PendingReversal]:
        return [PendingReversal(*row) for row in await self._fetch("fetch", _REVERSALS, list(states), limit)]

    async def orphans(self, since: datetime, until: datetime) -> list[TransactionView]:
        return [TransactionView(*row) for row in await self._fetch("fetch", ORPHANS, since, until)]

    async def states(self) -> dict[str, int]:
        return {state: count for state, count in await self._fetch("fetch", COUNT_BY_STATE)}

    async def approved_at_operators(self) -> list[tuple]:
        return [tuple(row) for row in await self._fetch("fetch", APPROVED_AT_OPERATORS)]

    async def approved_answers(self) -> set[tuple[str, str]]:
        return {tuple(row) for row in await self._fetch("fetch", APPROVED_ANSWERS)}

    async def history(self, txn_id: str) -> list[tuple]:
        return [tuple(row) for row in await self._fetch("fetch", HISTORY, txn_id)]

    async def count_transactions(self) -> int:
        return await self._fetch("fetchval", COUNT_TRANSACTIONS)

    async def summary(self) -> dict[str, int]:
        return {code: count for code, count in await self._fetch("fetch", SUMMARY)}

    async def outcome_rows(self, txn_id: str) -> list[Outcome]:
        return [Outcome(*row) for row in await self._fetch("fetch", OUTCOMES, txn_id)]

    async def search(self, query: TransactionQuery, limit: int) -> list[TransactionView]:
        sql, params = search_query(query, limit)
        return [TransactionView(*row) for row in await self._fetch("fetch", sql, *params)]

    async def reversal_queue(self) -> list[ReversalQueueRow]:
        return [ReversalQueueRow(*row) for row in await self._fetch("fetch", REVERSAL_QUEUE)]

    async def throughput(self, since: datetime) -> list[ThroughputRow]:
        return [ThroughputRow(*row) for row in await self._fetch("fetch", THROUGHPUT_POSTGRES, since)]

    async def ping(self) -> None:
        await self._fetch("fetchval", PING)

    async def insert_admin_event(self, at: datetime, actor: str, action: str, detail: str | None) -> None:
        await self._fetch("execute", INSERT_ADMIN_EVENT, at, actor, action, detail)

    async def admin_events(self, limit: int) -> list[AdminEvent]:
        return [AdminEvent(*row) for row in await self._fetch("fetch", ADMIN_EVENTS, limit)]

    async def _fetch(self, method: str, query: str, *args: Any) -> Any:
        async with self._pool.acquire() as conn:
            return await getattr(conn, method)(query, *args)


async def _insert(conn: asyncpg.Connection, batch: list[QueuedWrite], *, copy_intakes: bool) -> set[str]:
    """Insert the batch's rows; return the txn_ids of the intakes actually stored. With
    copy_intakes, a dedupe key already taken fails the whole statement (UniqueViolationError on
    intake_key_uq) instead of being answered."""
    astuple = msgspec.structs.astuple
    intakes = [astuple(item.intake) for item in batch if item.intake is not None]
    outcomes = [astuple(item.outcome) for item in batch if item.outcome is not None]
    stored: set[str] = set()
    if intakes and copy_intakes:
        # Binary COPY: a third of ON CONFLICT's server CPU and of unnest's client CPU. Key order,
        # as in _INSERT_INTAKES, so two batches claiming the same keys cannot deadlock.
        intakes.sort(key=_dedupe_key)
        await conn.copy_records_to_table("intake", records=intakes, columns=INTAKE_COLUMNS)
        stored = {intake[0] for intake in intakes}
    elif intakes:
        rows = await conn.fetch(_INSERT_INTAKES, *zip(*intakes))
        stored = {row[0] for row in rows}
    if outcomes:
        # Binary COPY: outcomes never conflict, and COPY costs far less client CPU than unnest arrays.
        await conn.copy_records_to_table("outcome", records=outcomes, columns=OUTCOME_COLUMNS)
    # Sorted by txn_id: two batches in flight lock reversal rows in one order, never in a cycle.
    reversals = sorted((astuple(item.reversal) for item in batch if item.reversal is not None), key=_txn_id)
    if reversals:
        await conn.execute(_INSERT_REVERSALS, *zip(*reversals))
    # A stable sort: two updates of one reversal in a batch keep their order (the later wins).
    updates = sorted((astuple(item.reversal_update) for item in batch if item.reversal_update is not None),
                     key=_txn_id)
    if updates:
        await conn.executemany(_UPDATE_REVERSAL, updates)
    return stored


async def _replay_chunk(conn: asyncpg.Connection, writes: list[SpilledWrite]) -> None:
    """Insert spilled records so that a record already in the database is not inserted again."""
    intakes = [w.intake for w in writes if w.intake is not None]
    if intakes:
        stored = {row[0] for row in await conn.fetch(_REPLAY_INTAKES, *zip(*map(msgspec.structs.astuple, intakes)))}
        missing = [i for i in intakes if i.txn_id not in stored]
        present = {row[0] for row in await conn.fetch("SELECT txn_id FROM intake WHERE txn_id = ANY($1::text[])",
                                                     [i.txn_id for i in missing])} if missing else set()
        # Not stored and not already there: its dedupe key was taken while the journal spilled.
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


def _view_or_none(row: Any) -> TransactionView | None:
    return None if row is None else TransactionView(*row)


def _is_open(conn: asyncpg.Connection) -> bool:
    try:
        return not conn.is_closed()
    except asyncpg.InterfaceError:
        # When a pooled connection closes, asyncpg releases it to the pool itself and
        # the proxy we hold refuses every call.
        return False
