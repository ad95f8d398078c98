"""SQLiteJournal: the demo journal, an embedded SQLite file, never blocking the event loop.

Owns one writer thread with its own sqlite3 connection, which applies the migrations at
start-up and then group-commits: it takes everything queued (up to batch_max), writes it
in one transaction, commits, and hands all the results back to the event loop in one
``loop.call_soon_threadsafe``. Reads (find/count/summary) run on a second, read-only
connection in a single reader thread, so they never wait for the writer (WAL mode lets
readers and the writer run side by side).

Durability: WAL with synchronous=FULL. In WAL mode, NORMAL only syncs at checkpoints,
so a power cut can lose the last commits; here a commit is a promise (the caller answers
the acquirer, and a lost intake would free its dedupe key for a duplicate top-up), so
every commit is fsynced. Group commit makes that one fsync per batch, not per record.

Failures mirror the Postgres journal: a full queue raises JournalOverloaded at once; a
failed commit gives every waiter of the batch JournalUnavailable and the writer reopens
its connection for the next batch; a record the database refuses is isolated with a
savepoint per caller (JournalRejected for that caller only).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import sqlite3
import threading
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

from .records import (
    Intake,
    JournalError,
    JournalOverloaded,
    JournalRejected,
    JournalUnavailable,
    Outcome,
    QueuedWrite,
    TransactionView,
    PendingReversal,
    Reversal,
    ReversalUpdate,
)
from .schema import INTAKE_COLUMNS, OUTCOME_COLUMNS, SQLITE_MIGRATIONS, SQLITE_SCHEMA_VERSION_DDL, VIEW_COLUMNS

DEFAULT_BATCH_MAX = 500
DEFAULT_COMMIT_TIMEOUT = 5.0  # seconds; bounds every wait: queue + commit, reads
DEFAULT_QUEUE_MAX = 10_000  # queued records before record_* raise JournalOverloaded
# Upsert with a conflict target (ON CONFLICT ... DO NOTHING): 3.24. RETURNING is not used.
MIN_SQLITE_VERSION = (3, 24, 0)

# Errors that belong to one record rather than to the database (see the savepoint replay):
# constraints, and values sqlite3 cannot bind (ProgrammingError, OverflowError).
_RECORD_ERRORS = (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.DataError, OverflowError)

_INSERT_INTAKE = (
    f"INSERT INTO intake ({', '.join(INTAKE_COLUMNS)}) VALUES ({', '.join('?' * len(INTAKE_COLUMNS))})"
    # Only a clash on the dedupe key is answered (False); a primary-key clash fails loudly.
    " ON CONFLICT (acquirer_id, tracking_code, business_day) WHERE uses_key DO NOTHING"
)
_INSERT_OUTCOME = f"INSERT INTO outcome ({', '.join(OUTCOME_COLUMNS)}) VALUES ({', '.join('?' * len(OUTCOME_COLUMNS))})"
_SELECT_VIEW = f"SELECT {', '.join(VIEW_COLUMNS)} FROM transactions"
# "AND uses_key" lets SQLite use the partial unique index.
_FIND = f"{_SELECT_VIEW} WHERE acquirer_id = ? AND tracking_code = ? AND business_day = ? AND uses_key"
_FIND_LATEST = (f"{_SELECT_VIEW} WHERE acquirer_id = ? AND tracking_code = ? AND uses_key"
                " ORDER BY received_at DESC LIMIT 1")
_FIND_TXN = f"{_SELECT_VIEW} WHERE txn_id = ?"
_INSERT_REVERSAL = ("INSERT INTO reversal (txn_id, operator_id, reason, created_at, next_attempt_at)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (txn_id) DO NOTHING")
_UPDATE_REVERSAL = ("UPDATE reversal SET state = ?, attempts = ?, next_attempt_at = ?, last_error = ?,"
                    " operator_code = ? WHERE txn_id = ?")
_PENDING_COLUMNS = ("r.txn_id, r.operator_id, r.reason, r.state, r.attempts, r.created_at, r.next_attempt_at,"
                    " r.last_error, i.acquirer_id, i.tracking_code, i.msisdn, i.amount, i.currency,"
                    " i.operator_stan, i.operator_sent_at")
_REVERSALS = (f"SELECT {_PENDING_COLUMNS} FROM reversal r JOIN intake i USING (txn_id)"
              " WHERE r.state IN ({states}) ORDER BY r.operator_id, r.created_at LIMIT ?")
_ORPHANS = (f"{_SELECT_VIEW} WHERE routed_operator IS NOT NULL AND state IS NULL"
            " AND received_at >= ? AND received_at < ? ORDER BY received_at")
_STATES = "SELECT coalesce(state, 'in flight'), count(*) FROM transactions GROUP BY 1"
_APPROVED_AT_OPERATORS = (
    "SELECT txn_id, routed_operator, operator_stan, operator_sent_at, tracking_code, msisdn, amount"
    " FROM transactions WHERE state = 'approved' ORDER BY received_at"
)
_APPROVED_ANSWERS = "SELECT acquirer_id, tracking_code FROM transactions WHERE response_code = '00'"
_HISTORY = ("SELECT ended_at, state, event, response_code, operator_code, operator_ref FROM outcome"
            " WHERE txn_id = ? ORDER BY ended_at, id")
_COUNT = "SELECT count(*) FROM transactions"
_SUMMARY = "SELECT coalesce(response_code, 'pending'), count(*) FROM transactions GROUP BY 1"


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


class _Inbox:
    """The bounded, thread-safe queue between callers (event loop) and the writer thread."""

    def __init__(self, capacity: int) -> None:
        self._items: collections.deque[QueuedWrite] = collections.deque()
        self._capacity = capacity
        self._ready = threading.Condition(threading.Lock())
        self._closed = False

    def put(self, item: QueuedWrite) -> None:
        # The lock is only ever held for a few deque operations, so this cannot stall
        # the event loop.
        with self._ready:
            if self._closed:
                raise JournalUnavailable("journal is closing")
            if len(self._items) >= self._capacity:
                raise JournalOverloaded(f"journal queue full ({self._capacity} records waiting)")
            self._items.append(item)
            self._ready.notify()

    def take(self, limit: int) -> list[QueuedWrite]:
        """Everything queued, up to limit; blocks while empty; [] once closed and drained."""
        with self._ready:
            while not self._items:
                if self._closed:
                    return []
                self._ready.wait()
            items = self._items
            return [items.popleft() for _ in range(min(limit, len(items)))]

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()


class SQLiteJournal:
    """The transaction journal in an SQLite file. See the module docstring."""

    def __init__(
        self,
        path: str | Path,
        *,
        batch_max: int = DEFAULT_BATCH_MAX,
        commit_timeout: float = DEFAULT_COMMIT_TIMEOUT,
        queue_max: int = DEFAULT_QUEUE_MAX,
    ) -> None:
        if str(path) == ":memory:" or str(path).startswith("file:"):
            raise ValueError("SQLiteJournal needs a file path (the writer and reader share it)")
        if batch_max < 1 or queue_max < 1:
            raise ValueError("batch_max and queue_max must be >= 1")
        self._path = Path(path)
        self._batch_max = batch_max
        self._commit_timeout = commit_timeout
        self._queue_max = queue_max
        # Below commit_timeout, so a locked database is reported as such to the waiter
        # rather than as a bare timeout.
        self._busy_timeout_ms = int(commit_timeout * 1000 / 2)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inbox: _Inbox | None = None
        self._writer: threading.Thread | None = None
        self._reader: concurrent.futures.ThreadPoolExecutor | None = None
        self._reader_conn: sqlite3.Connection | None = None  # touched only in the reader thread
        self._running = False
        self.batches_committed = 0  # transactions committed by the writer (for tests/metrics)

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Open the file, apply missing migrations, start the writer. No-op if running."""
        if self._running:
            return
        if sqlite3.sqlite_version_info < MIN_SQLITE_VERSION:
            raise JournalError(
                f"SQLite {sqlite3.sqlite_version} is too old for the journal;"
                f" need {'.'.join(map(str, MIN_SQLITE_VERSION))}+"
            )
        self._loop = asyncio.get_running_loop()
        self._inbox = _Inbox(self._queue_max)
        ready: asyncio.Future = self._loop.create_future()
        self._writer = threading.Thread(
            target=self._run_writer, args=(ready,), name="journal-sqlite-writer", daemon=True
        )
        # daemon: a journal nobody closed must not hang interpreter exit; close() is
        # what flushes the queue.
        self._writer.start()
        await ready  # the migrations ran (or their exception is raised here)
        self._reader = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="journal-sqlite-reader")
        self._running = True

    async def close(self) -> None:
        """Flush everything queued, stop the writer, close both connections. Idempotent."""
        if not self._running:
            return
        self._running = False  # refuse new records and reads; queued records are still written
        # Reader first: the last connection to close checkpoints the WAL and removes the
        # -wal/-shm files, and a read-only connection cannot do that.
        await self._loop.run_in_executor(self._reader, self._close_reader_conn)
        self._reader.shutdown(wait=False)  # its only thread is idle now
        self._reader = None
        self._inbox.close()
        await asyncio.to_thread(self._writer.join)

    async def __aenter__(self) -> SQLiteJournal:
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
        item = QueuedWrite(intake, outcome, self._loop.create_future(), reversal, update)
        self._inbox.put(item)  # JournalOverloaded when full
        try:
            async with asyncio.timeout(self._commit_timeout):
                return await item.future
        except TimeoutError:
            raise JournalUnavailable(f"not committed within {self._commit_timeout}s") from None
        finally:
            if item.future.cancelled():  # timed out, or the caller itself was cancelled
                item.abandoned = True  # a plain attribute: safe to read from the writer

    # -- the writer thread --------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        # isolation_level=None: no implicit transactions; the writer says BEGIN/COMMIT.
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=True)
        conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")  # see the module docstring
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        # BEGIN IMMEDIATE takes the write lock: a second process starting at once waits
        # (busy_timeout), then finds the migrations applied.
        conn.execute("BEGIN IMMEDIATE")
        try:
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
            conn.execute("ROLLBACK")
            raise

    def _run_writer(self, ready: asyncio.Future) -> None:
        try:
            conn: sqlite3.Connection | None = self._open()
            self._migrate(conn)
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            self._notify(_settle, ready, exc)
            return
        self._notify(_settle, ready, None)
        try:
            while batch := self._inbox.take(self._batch_max):
                batch = [item for item in batch if not item.droppable]
                if not batch:
                    continue
                try:
                    if conn is None:
                        conn = self._open()
                    results = self._commit_batch(conn, batch)
                except Exception as exc:  # noqa: BLE001 - every failure goes to the waiters
                    # Start the next batch on a fresh connection, whatever state this one is in.
                    conn = _close_quietly(conn)
                    results = [_unavailable(len(batch), exc) for _ in batch]
                # One wake-up of the event loop per batch, not per record.
                self._notify(_settle_batch, batch, results)
        finally:
            _close_quietly(conn)

    def _notify(self, callback: Any, *args: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:
            pass  # the event loop is closed: nobody is left waiting; keep writing the queue

    def _commit_batch(self, conn: sqlite3.Connection, batch: list[QueuedWrite]) -> list[Any]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            results = [self._write(conn, item) for item in batch]
            conn.execute("COMMIT")
        except _RECORD_ERRORS:
            conn.execute("ROLLBACK")
            results = self._commit_isolated(conn, batch)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self.batches_committed += 1
        return results

    def _commit_isolated(self, conn: sqlite3.Connection, batch: list[QueuedWrite]) -> list[Any]:
        """Replay a batch that one bad record failed: a savepoint per caller, one commit."""
        results: list[Any] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for item in batch:
                conn.execute("SAVEPOINT record")
                try:
                    results.append(self._write(conn, item))
                except _RECORD_ERRORS as exc:
                    conn.execute("ROLLBACK TO record")
                    err = JournalRejected(f"the journal database refused this record: {exc}")
                    err.__cause__ = exc
                    results.append(err)
                conn.execute("RELEASE record")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return results

    @staticmethod
    def _write(conn: sqlite3.Connection, item: QueuedWrite) -> bool | None:
        stored = None
        if item.intake is not None:
            cursor = conn.execute(_INSERT_INTAKE, _intake_row(item.intake))
            stored = cursor.rowcount == 1  # 0: the dedupe key was taken
        if item.outcome is not None:
            conn.execute(_INSERT_OUTCOME, _outcome_row(item.outcome))
        if item.reversal is not None:
            r = item.reversal
            conn.execute(_INSERT_REVERSAL, (r.txn_id, r.operator_id, r.reason, _iso(r.created_at), _iso(r.created_at)))
        if item.reversal_update is not None:
            u = item.reversal_update
            conn.execute(_UPDATE_REVERSAL, (u.state, u.attempts, _iso(u.next_attempt_at), u.last_error,
                                            u.operator_code, u.txn_id))
        if item.intake is None or item.outcome is not None:
            return None  # outcome, refusal or reversal bookkeeping
        return stored

    # -- reads (a read-only connection in the reader thread) --------------------------

    async def find(self, acquirer_id: str, tracking_code: str, business_day: date) -> TransactionView | None:
        """The transaction holding this dedupe key, with its latest outcome, or None."""
        rows = await self._read(_FIND, (acquirer_id, tracking_code, business_day.isoformat()))
        return _view(rows[0]) if rows else None

    async def try_lead(self) -> bool:
        """One process owns a SQLite journal: it always leads store-and-forward."""
        return True

    async def find_latest(self, acquirer_id: str, tracking_code: str) -> TransactionView | None:
        """The newest transaction that used this (acquirer, tracking code), on any business day."""
        rows = await self._read(_FIND_LATEST, (acquirer_id, tracking_code))
        return _view(rows[0]) if rows else None

    async def transaction(self, txn_id: str) -> TransactionView | None:
        rows = await self._read(_FIND_TXN, (txn_id,))
        return _view(rows[0]) if rows else None

    async def reversals(self, states: tuple[str, ...] = ("pending",), limit: int = 1000) -> list[PendingReversal]:
        """Stored reversals in these states, oldest first per operator."""
        query = _REVERSALS.format(states=", ".join("?" * len(states)))
        return [_pending(row) for row in await self._read(query, (*states, limit))]

    async def orphans(self, since: datetime, until: datetime) -> list[TransactionView]:
        """Transactions routed to an operator, received in [since, until), that have no outcome at all."""
        return [_view(row) for row in await self._read(_ORPHANS, (_iso(since), _iso(until)))]

    async def states(self) -> dict[str, int]:
        """Transactions by state ("in flight" for those with no outcome yet)."""
        return {state: count for state, count in await self._read(_STATES, ())}

    async def approved_at_operators(self) -> list[tuple]:
        """(txn_id, operator, operator_stan, operator_sent_at, tracking_code, msisdn, amount) of every
        transaction whose current state is approved (credited and not reversed)."""
        return [(t, o, stan, _time_or_none(at), rrn, msisdn, amount)
                for t, o, stan, at, rrn, msisdn, amount in await self._read(_APPROVED_AT_OPERATORS, ())]

    async def approved_answers(self) -> set[tuple[str, str]]:
        """(acquirer, tracking code) of every transaction answered 00, reversed since or not."""
        return {tuple(row) for row in await self._read(_APPROVED_ANSWERS, ())}

    async def history(self, txn_id: str) -> list[tuple]:
        """Every outcome row of a transaction, oldest first: (ended_at, state, event, 39, operator code, ref)."""
        return [(_time_or_none(at), *rest) for at, *rest in await self._read(_HISTORY, (txn_id,))]

    async def count_transactions(self) -> int:
        return (await self._read(_COUNT, ()))[0][0]

    async def summary(self) -> dict[str, int]:
        """Transactions by response code; those with no outcome yet under "pending"."""
        return {code: count for code, count in await self._read(_SUMMARY, ())}

    async def _read(self, query: str, params: tuple) -> list[tuple]:
        if not self._running:
            raise JournalUnavailable("journal is not running")
        try:
            return await asyncio.wait_for(
                self._loop.run_in_executor(self._reader, self._query, query, params), self._commit_timeout
            )
        except (sqlite3.Error, TimeoutError) as exc:
            raise JournalUnavailable(f"journal read failed: {exc!r}") from exc

    def _query(self, query: str, params: tuple) -> list[tuple]:
        if self._reader_conn is None:
            uri = f"{self._path.resolve().as_uri()}?mode=ro"
            self._reader_conn = sqlite3.connect(uri, uri=True, isolation_level=None)
            self._reader_conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
        try:
            return self._reader_conn.execute(query, params).fetchall()
        except sqlite3.Error:
            self._reader_conn = _close_quietly(self._reader_conn)  # reopen on the next read
            raise

    def _close_reader_conn(self) -> None:
        self._reader_conn = _close_quietly(self._reader_conn)


def _close_quietly(conn: sqlite3.Connection | None) -> None:
    if conn is not None:
        try:
            conn.close()
        except sqlite3.Error:
            pass
    return None


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


def _settle_batch(batch: list[QueuedWrite], results: list[Any]) -> None:
    for item, result in zip(batch, results):
        _settle(item.future, result)
