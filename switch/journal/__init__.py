"""The transaction journal: an append-only record of every top-up, group-committed.

Owns what the switch writes about each transaction and the guarantee behind it: a
``record_*`` call returns only once its record is committed (or raises), and the
dedupe key (acquirer_id, tracking_code, business_day) is claimed by at most one intake.

One core (core.py: queueing, group commit, timeouts, overload, a refused record's
isolation, the spill file) runs on one of two thin stores, which only write batches and
answer reads:

- ``PostgresJournal`` (postgres.py, asyncpg) for production;
- ``SQLiteJournal`` (sqlite.py, stdlib sqlite3 in its own writer thread) for the demo.

The schema of both, and the reads they share, are in schema.py; the records, the events
and the errors in records.py; transaction states come from ``switch.flow.states``.

How a caller uses it::

    if not await journal.record_intake(intake):      # key taken: nothing stored
        await journal.record_refusal(refused_intake, refused_outcome)   # answer 94
    ...
    await journal.record_outcome(outcome)

``JournalOverloaded`` (queue full) and ``JournalUnavailable`` (not committed: database
down, commit timeout, journal closed; ``JournalRejected`` when the database refused that
one record) both mean "not stored": answer 96.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Protocol, runtime_checkable

from switch.stats import Buckets

from .postgres import PostgresJournal
from .records import (
    AdminEvent,
    EVENTS,
    Intake,
    JournalError,
    JournalOverloaded,
    JournalRejected,
    JournalUnavailable,
    Outcome,
    PendingReversal,
    Reversal,
    ReversalQueueRow,
    ReversalUpdate,
    ThroughputRow,
    TransactionQuery,
    TransactionView,
)
from .sqlite import SQLiteJournal

__all__ = [
    "AdminEvent",
    "EVENTS",
    "Intake",
    "Journal",
    "JournalError",
    "JournalOverloaded",
    "JournalRejected",
    "JournalUnavailable",
    "Outcome",
    "PendingReversal",
    "Reversal",
    "ReversalQueueRow",
    "ReversalUpdate",
    "ThroughputRow",
    "PostgresJournal",
    "SQLiteJournal",
    "TransactionQuery",
    "TransactionView",
]


@runtime_checkable
class Journal(Protocol):
    """What the switch needs from a journal; both backends implement it."""

    batches_committed: int  # writer transactions committed so far
    records_spilled: int    # records written to the spill file so far
    commit_seconds: Buckets  # seconds each committed batch took (read by /metrics)
    batch_records: Buckets   # records in each committed batch

    @property
    def queued(self) -> int:
        """Records waiting for the writer."""

    @property
    def spilling(self) -> bool:
        """True while records go to the spill file (the database cannot take them)."""

    async def start(self) -> None:
        """Connect, create/migrate the schema, start the writer. No-op if running."""

    async def close(self) -> None:
        """Flush everything queued, stop the writer, close connections. Idempotent."""

    async def record_intake(self, intake: Intake) -> bool:
        """Returns once the batch holding it is committed. False (and nothing stored)
        when intake.uses_key and the dedupe key is already taken."""

    async def record_outcome(self, outcome: Outcome, reversal: Reversal | None = None) -> None:
        """Returns once committed (with the reversal it creates, if any, in the same commit)."""

    async def record_reversal_update(self, update: ReversalUpdate, outcome: Outcome | None = None) -> None:
        """A stored reversal's attempt or end, with the transaction's new state; once committed."""

    async def record_refusal(self, intake: Intake, outcome: Outcome) -> None:
        """Both rows in one transaction (intake.uses_key must be False)."""

    async def find(self, acquirer_id: str, tracking_code: str, business_day: date) -> TransactionView | None:
        """The transaction holding that dedupe key, with its latest outcome."""

    async def try_lead(self) -> bool:
        """True while this process leads store-and-forward for the journal (one process at a time)."""

    async def find_latest(self, acquirer_id: str, tracking_code: str) -> TransactionView | None:
        """The newest transaction that used this (acquirer, tracking code), any business day."""

    async def transaction(self, txn_id: str) -> TransactionView | None:
        """One transaction by its id."""

    async def reversal(self, txn_id: str) -> PendingReversal | None:
        """The reversal stored for a transaction, whatever its state (with its last operator_code), or None."""

    async def reversals(self, states: tuple[str, ...] = ("pending",), limit: int = 1000) -> list[PendingReversal]:
        """Stored reversals in these states, oldest first per operator."""

    async def orphans(self, since: datetime, until: datetime) -> list[TransactionView]:
        """Routed to an operator, received in [since, until), and no outcome at all (a crash)."""

    async def states(self) -> dict[str, int]:
        """Transactions by current state."""

    async def approved_answers(self) -> set[tuple[str, str]]:
        """(acquirer, tracking code) of every transaction answered 00."""

    async def approved_at_operators(self) -> list[tuple]:
        """Every transaction whose current state is approved, with the operator's reference."""

    async def record_admin_event(self, actor: str, action: str, detail: str | None = None) -> None:
        """A change a person made through the admin server (reload, resolve), with who; written at once."""

    async def admin_events(self, limit: int = 100) -> list[AdminEvent]:
        """Admin events, newest first."""

    async def count_transactions(self) -> int:
        """Rows in the transactions view."""

    async def summary(self) -> dict[str, int]:
        """Transactions by response code; no outcome yet counts as "pending"."""

    async def history(self, txn_id: str) -> list[tuple]:
        """Every outcome row, oldest first: (ended_at, state, event, 39, operator code, operator ref)."""

    async def outcome_rows(self, txn_id: str) -> list[Outcome]:
        """Every outcome row of a transaction (late answers included) in the order written."""

    async def search(self, query: TransactionQuery, limit: int = 50) -> list[TransactionView]:
        """Transactions matching the query, newest first, at most `limit` (paged by query.before)."""

    async def reversal_queue(self) -> list[ReversalQueueRow]:
        """Unsettled stored reversals (pending, failed) per operator and state, with the oldest."""

    async def throughput(self, since: datetime) -> list[ThroughputRow]:
        """Top-ups received since `since` that reached their end, per minute and operator, oldest first."""

    async def ping(self) -> None:
        """Raises JournalUnavailable unless the journal takes records and its database answers a read."""
