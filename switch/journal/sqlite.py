"""SQLiteJournal: the demo journal, an embedded SQLite file, never blocking the event loop.

The journal core (core.py) does the queueing, group commit and timeouts; this module is
its store. It owns two threads, each with its own sqlite3 connection: the writer, which
applies the migrations at start-up and then writes and commits each batch the core hands
it (one thread hop per batch, not per record), and a reader with a read-only connection,
so reads never wait for the writer (WAL mode lets readers and the writer run side by
side). Values are stored as text where SQLite has no type (see schema.py).

Durability: WAL with synchronous=FULL. In WAL mode, NORMAL only syncs at checkpoints,
so a power cut can lose the last commits; here a commit is a promise (the caller answers
the acquirer, and a lost intake would free its dedupe key for a duplicate top-up), so
every commit is fsynced. Group commit makes that one fsync per batch, not per record.

A failed commit closes the writer's connection, and the next batch opens a fresh one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sqlite3
from datetime import date, datetime, timezone
from pathlib import Path

from .core import DEFAULT_BATCH_MAX, DEFAULT_COMMIT_TIMEOUT, DEFAULT_QUEUE_MAX, JournalCore, QueuedWrite
from .records import (
    AdminEvent,
    Intake,
    JournalError,
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
    REVERSAL_QUEUE,
    REVERSALS_ORDER,
    SELECT_REVERSAL,
    SQLITE_MIGRATIONS,
    SQLITE_SCHEMA_VERSION_DDL,
    SUMMARY,
    THROUGHPUT_SQLITE,
    search_query,
    sqlite_placeholders,
)

# Upsert with a conflict target (ON CONFLICT ... DO NOTHING): 3.24. RETURNING is not used.
MIN_SQLITE_VERSION = (3, 24, 0)

_INSERT_INTAKE = (
    f"INSERT INTO intake ({', '.join(INTAKE_COLUMNS)}) VALUES ({', '.join('?' * len(INTAKE_COLUMNS))})"
    # Only a clash on the dedupe key is answered (False); a primary-key clash fails loudly.
    " ON CONFLICT (acquirer_id, tracking_code, business_day) WHERE uses_key DO NOTHING"
)
_INSERT_OUTCOME = f"INSERT INTO outcome ({', '.join(OUTCOME_COLUMNS)}) VALUES ({', '.join('?' * len(OUTCOME_COLUMNS))})"
_INSERT_REVERSAL = ("INSERT INTO reversal (txn_id, operator_id, reason, created_at, next_attempt_at)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (txn_id) DO NOTHING")
_UPDATE_REVERSAL = ("UPDATE reversal SET state = ?, attempts = ?, next_attempt_at = ?, last_error = ?,"
                    " operator_code = ? WHERE txn_id = ?")
_FIND = sqlite_placeholders(FIND)
_FIND_LATEST = sqlite_placeholders(FIND_LATEST)
_FIND_TXN = sqlite_placeholders(FIND_TXN)
_FIND_REVERSAL = sqlite_placeholders(FIND_REVERSAL)
_INSERT_ADMIN_EVENT = sqlite_placeholders(INSERT_ADMIN_EVENT)
_ADMIN_EVENTS = sqlite_placeholders(ADMIN_EVENTS)
_REVERSALS = f"{SELECT_REVERSAL} WHERE r.state IN ({{states}}){REVERSALS_ORDER} LIMIT ?"
_ORPHANS = sqlite_placeholders(ORPHANS)
_HISTORY = sqlite_placeholders(HISTORY)
_OUTCOMES = sqlite_placeholders(OUTCOMES)


def _iso(value: datetime) -> str:
    # Always UTC, always microseconds: fixed width, so text order is time order.
    return value.astimezone(timezone.utc).isoformat(timespec="microseconds")


def _intake_row(i: Intake) -> tuple:
    return (
        i.txn_id, _iso(i.received_at), i.business_day.isoformat(), i.mti, i.acquirer_id,
        i.tracking_code, i.stan, i.transmitted_at, i.terminal_id, i.merchant_id,
        i.card_masked, i.msisdn, i.amount, i.currency, i.channel, int(i.uses_key),
        i.routed_operator, i.operator_stan, _iso_or_none(i.operator_sent_at),
    )  # fmt: skip


def _outcome_row(o: Outcome) -> tuple:
    return (
        o.txn_id, _iso(o.ended_at), o.state, o.response_code, o.operator_id,
        o.operator_ref, o.approval_code, o.operator_code, o.latency_ms, o.event,
    )  # fmt: skip


def _iso_or_none(value: datetime | None) -> str | None:
    return None if value is None else _iso(value)


def _time_or_none(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _param(value: object) -> object:
    """A query parameter as this schema stores it (times as UTC ISO text, days as ISO dates)."""
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, date):
        return value.isoformat()
    return value


def _outcome(row: tuple) -> Outcome:
    txn_id, ended_at, *rest = row
    return Outcome(txn_id, datetime.fromisoformat(ended_at), *rest)


def _pending(row: tuple) -> PendingReversal:
    values = list(row)
    for index in (5, 6, 14):  # created_at, next_attempt_at, operator_sent_at
        values[index] = _time_or_none(values[index])
    return PendingReversal(*values)


def _view(row: tuple) -> TransactionView:
    (txn_id, received_at, business_day, mti, acquirer_id, tracking_code, stan,
     transmitted_at, terminal_id, merchant_id, card_masked, msisdn, amount, currency,
     channel, uses_key, routed_operator, operator_stan, operator_sent_at,
     state, response_code, operator_id, operator_ref, approval_code,
     operator_code, ended_at, latency_ms) = row  # fmt: skip
    return TransactionView(
        txn_id, datetime.fromisoformat(received_at), date.fromisoformat(business_day), mti,
        acquirer_id, tracking_code, stan, transmitted_at, terminal_id, merchant_id,
        card_masked, msisdn, amount, currency, channel, bool(uses_key),
        routed_operator, operator_stan, _time_or_none(operator_sent_at), state,
        response_code, operator_id, operator_ref, approval_code, operator_code,
        None if ended_at is None else datetime.fromisoformat(ended_at), latency_ms,
    )  # fmt: skip


class SQLiteJournal(JournalCore):
    """The transaction journal in an SQLite file: the journal core on an SQLiteStore."""

    def __init__(
        self,
        path: str | Path,
        *,
        batch_max: int = DEFAULT_BATCH_MAX,
        commit_timeout: float = DEFAULT_COMMIT_TIMEOUT,
        queue_max: int = DEFAULT_QUEUE_MAX,
    ) -> None:
        # The busy timeout is below commit_timeout, so a locked database is reported as
        # such to the waiter rather than as a bare timeout.
        store = SQLiteStore(path, busy_timeout=commit_timeout / 2)
        super().__init__(store, batch_max=batch_max, commit_timeout=commit_timeout, queue_max=queue_max)


class SQLiteStore:
    """The journal's tables in one SQLite file. See the module docstring."""

    # Errors that belong to one record rather than to the database: constraints, and
    # values sqlite3 cannot bind (ProgrammingError, OverflowError).
    record_errors = (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.DataError, OverflowError)
    read_errors = (sqlite3.Error,)

    def __init__(self, path: str | Path, *, busy_timeout: float) -> None:
        if str(path) == ":memory:" or str(path).startswith("file:"):
            raise ValueError("SQLiteJournal needs a file path (the writer and reader share it)")
        self._path = Path(path)
        self._busy_timeout_ms = int(busy_timeout * 1000)
        self._loop: asyncio.AbstractEventLoop | None = None
        # One thread each, so that each connection is only ever used by the thread that opened it.
        self._writer: concurrent.futures.ThreadPoolExecutor | None = None
        self._reader: concurrent.futures.ThreadPoolExecutor | None = None
        self._writer_conn: sqlite3.Connection | None = None  # touched only in the writer thread
        self._reader_conn: sqlite3.Connection | None = None  # touched only in the reader thread

    # -- lifecycle ----------------------------------------------------------------------

    async def open(self) -> None:
        if sqlite3.sqlite_version_info < MIN_SQLITE_VERSION:
            raise JournalError(
                f"SQLite {sqlite3.sqlite_version} is too old for the journal;"
                f" need {'.'.join(map(str, MIN_SQLITE_VERSION))}+"
            )
        self._loop = asyncio.get_running_loop()
        self._writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="journal-sqlite-writer")
        self._reader = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="journal-sqlite-reader")
        try:
            await self._loop.run_in_executor(self._writer, self._open_and_migrate)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._writer is None:
            return
        # Reader first: the last connection to close checkpoints the WAL and removes the
        # -wal/-shm files, and a read-only connection cannot do that.
        await self._loop.run_in_executor(self._reader, self._close_reader_conn)
        await self._loop.run_in_executor(self._writer, self._close_writer_conn)
        self._reader.shutdown()
        self._writer.shutdown()
        self._reader = self._writer = None

    async def try_lead(self) -> bool:
        """One process owns an SQLite journal: it always leads store-and-forward."""
        return True

    # -- writes (the writer thread) -------------------------------------------------------

    async def write(self, batch: list[QueuedWrite]) -> set[str]:
        return await self._loop.run_in_executor(self._writer, self._write_batch, batch)

    async def write_each(self, batch: list[QueuedWrite]) -> list[set[str] | BaseException]:
        return await self._loop.run_in_executor(self._writer, self._write_each, batch)

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: no implicit transactions; the writer says BEGIN/COMMIT.
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=True)
        conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")  # see the module docstring
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    def _open_and_migrate(self) -> None:
        conn = self._connect()
        # BEGIN IMMEDIATE takes the write lock: a second process starting at once waits
        # (busy_timeout), then finds the migrations applied.
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(SQLITE_SCHEMA_VERSION_DDL)
            (current,) = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
            if current > len(SQLITE_MIGRATIONS):
                raise JournalError(
                    f"journal file is at schema version {current}, newer than this code knows"
                    f" ({len(SQLITE_MIGRATIONS)}); refusing to run against it"
                )
            for version, statements in enumerate(SQLITE_MIGRATIONS[current:], start=current + 1):
                for statement in statements:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                    (version, _iso(datetime.now(timezone.utc))),
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.close()  # rolls back
            raise
        self._writer_conn = conn

    def _write_batch(self, batch: list[QueuedWrite]) -> set[str]:
        conn = self._writer_conn or self._connect()
        self._writer_conn = conn
        stored: set[str] = set()
        try:
            conn.execute("BEGIN IMMEDIATE")
            for item in batch:
                _insert(conn, item, stored)
            conn.execute("COMMIT")
        except self.record_errors:
            conn.execute("ROLLBACK")
            raise
        except BaseException:
            self._close_writer_conn()  # rolls back; the next batch starts on a fresh connection
            raise
        return stored

    def _write_each(self, batch: list[QueuedWrite]) -> list[set[str] | BaseException]:
        conn = self._writer_conn or self._connect()
        self._writer_conn = conn
        results: list[set[str] | BaseException] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for item in batch:
                conn.execute("SAVEPOINT record")
                stored: set[str] = set()
                try:
                    _insert(conn, item, stored)
                    results.append(stored)
                except self.record_errors as exc:
                    conn.execute("ROLLBACK TO record")
                    results.append(exc)
                conn.execute("RELEASE record")
            conn.execute("COMMIT")
        except BaseException:
            self._close_writer_conn()
            raise
        return results

    def _close_writer_conn(self) -> None:
        self._writer_conn = _close_quietly(self._writer_conn)

    # -- reads (the reader thread) --------------------------------------------------------

    async def find(self, acquirer_id: str, tracking_code: str, business_day: date) -> TransactionView | None:
        rows = await self._rows(_FIND, (acquirer_id, tracking_code, business_day.isoformat()))
        return _view(rows[0]) if rows else None

    async def find_latest(self, acquirer_id: str, tracking_code: str) -> TransactionView | None:
        rows = await self._rows(_FIND_LATEST, (acquirer_id, tracking_code))
        return _view(rows[0]) if rows else None

    async def transaction(self, txn_id: str) -> TransactionView | None:
        rows = await self._rows(_FIND_TXN, (txn_id,))
        return _view(rows[0]) if rows else None

    async def reversal(self, txn_id: str) -> PendingReversal | None:
        rows = await self._rows(_FIND_REVERSAL, (txn_id,))
        return _pending(rows[0]) if rows else None

    async def reversals(self, states: tuple[str, ...], limit: int) -> list[PendingReversal]:
        query = _REVERSALS.format(states=", ".join("?" * len(states)))
        return [_pending(row) for row in await self._rows(query, (*states, limit))]

    async def orphans(self, since: datetime, until: datetime) -> list[TransactionView]:
        return [_view(row) for row in await self._rows(_ORPHANS, (_iso(since), _iso(until)))]

    async def states(self) -> dict[str, int]:
        return {state: count for state, count in await self._rows(COUNT_BY_STATE, ())}

    async def approved_at_operators(self) -> list[tuple]:
        return [(t, o, stan, _time_or_none(at), rrn, msisdn, amount)
                for t, o, stan, at, rrn, msisdn, amount in await self._rows(APPROVED_AT_OPERATORS, ())]

    async def approved_answers(self) -> set[tuple[str, str]]:
        return {tuple(row) for row in await self._rows(APPROVED_ANSWERS, ())}

    async def history(self, txn_id: str) -> list[tuple]:
        return [(_time_or_none(at), *rest) for at, *rest in await self._rows(_HISTORY, (txn_id,))]

    async def count_transactions(self) -> int:
        return (await self._rows(COUNT_TRANSACTIONS, ()))[0][0]

    async def summary(self) -> dict[str, int]:
        return {code: count for code, count in await self._rows(SUMMARY, ())}

    async def outcome_rows(self, txn_id: str) -> list[Outcome]:
        return [_outcome(row) for row in await self._rows(_OUTCOMES, (txn_id,))]

    async def search(self, query: TransactionQuery, limit: int) -> list[TransactionView]:
        sql, params = search_query(query, limit)
        return [_view(row) for row in await self._rows(sqlite_placeholders(sql), tuple(map(_param, params)))]

    async def reversal_queue(self) -> list[ReversalQueueRow]:
        return [ReversalQueueRow(operator, state, count, datetime.fromisoformat(oldest))
                for operator, state, count, oldest in await self._rows(REVERSAL_QUEUE, ())]

    async def throughput(self, since: datetime) -> list[ThroughputRow]:
        rows = await self._rows(sqlite_placeholders(THROUGHPUT_SQLITE), (_param(since),))
        return [ThroughputRow(datetime.fromisoformat(minute + ":00+00:00"), operator, answered, approved)
                for minute, operator, answered, approved in rows]

    async def ping(self) -> None:
        await self._rows(PING, ())

    async def insert_admin_event(self, at: datetime, actor: str, action: str, detail: str | None) -> None:
        await self._loop.run_in_executor(self._writer, self._insert_admin_event, _iso(at), actor, action, detail)

    def _insert_admin_event(self, at: str, actor: str, action: str, detail: str | None) -> None:
        # Its own transaction, on the writer's connection and thread (between two batches).
        conn = self._writer_conn or self._connect()
        self._writer_conn = conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(_INSERT_ADMIN_EVENT, (at, actor, action, detail))
            conn.execute("COMMIT")
        except BaseException:
            self._close_writer_conn()
            raise

    async def admin_events(self, limit: int) -> list[AdminEvent]:
        return [AdminEvent(datetime.fromisoformat(at), actor, action, detail)
                for at, actor, action, detail in await self._rows(_ADMIN_EVENTS, (limit,))]

    async def _rows(self, query: str, params: tuple) -> list[tuple]:
        return await self._loop.run_in_executor(self._reader, self._query, query, params)

    def _query(self, query: str, params: tuple) -> list[tuple]:
        if self._reader_conn is None:
            uri = f"{self._path.resolve().as_uri()}?mode=ro"
            self._reader_conn = sqlite3.connect(uri, uri=True, isolation_level=None)
            self._reader_conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
        try:
            return self._reader_conn.execute(query, params).fetchall()
        except sqlite3.Error:
            self._close_reader_conn()  # reopen on the next read
            raise

    def _close_reader_conn(self) -> None:
        self._reader_conn = _close_quietly(self._reader_conn)


def _insert(conn: sqlite3.Connection, item: QueuedWrite, stored: set[str]) -> None:
    """Insert one write's rows; add its intake's txn_id to stored if the intake was stored."""
    if item.intake is not None:
        if conn.execute(_INSERT_INTAKE, _intake_row(item.intake)).rowcount == 1:  # 0: the dedupe key was taken
            stored.add(item.intake.txn_id)
    if item.outcome is not None:
        conn.execute(_INSERT_OUTCOME, _outcome_row(item.outcome))
    if item.reversal is not None:
        r = item.reversal
        conn.execute(_INSERT_REVERSAL, (r.txn_id, r.operator_id, r.reason, _iso(r.created_at), _iso(r.created_at)))
    if item.reversal_update is not None:
        u = item.reversal_update
        conn.execute(_UPDATE_REVERSAL, (u.state, u.attempts, _iso(u.next_attempt_at), u.last_error,
                                        u.operator_code, u.txn_id))


def _close_quietly(conn: sqlite3.Connection | None) -> None:
    if conn is not None:
        try:
            conn.close()
        except sqlite3.Error:
            pass
    return None
