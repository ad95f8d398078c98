"""The journal's vocabulary: the records it stores, the view it returns, the errors it raises.

Records are frozen ``msgspec.Struct``s because the switch builds two of them for every
top-up; they validate only what the database cannot be trusted to catch the same way in
both backends (time zones and the state name). Everything else is stored as given: the
switch masks the card and normalises the MSISDN before it builds an Intake.
"""

from __future__ import annotations

from datetime import date, datetime

import msgspec

from switch.errors import AirswitchError
from switch.flow.states import TxnState

# Outcome.state: a TxnState (switch/flow/states.py, where the states and their moves are declared).
# Outcome.event: why the row was written. "end": the top-up's own end; "late_answer": an
# operator answered after the switch gave up (recorded, but it never sets the state the view
# shows); "reversal_reopened": a late approval after a settled reversal; "acquirer_reversal": a
# 0400/0420 asked to undo it; "recovered": found sent but unfinished after a crash;
# "reversal_done" / "reversal_failed": the store-and-forward outcome; "manual_resolution": a
# person's decision. A tuple, not a set: the schema's CHECK constraint is generated from it in
# this order.
EVENTS: tuple[str, ...] = ("end", "late_answer", "acquirer_reversal", "recovered", "reversal_done",
                           "reversal_failed", "manual_resolution", "reversal_reopened")
# Reversal.state / ReversalUpdate.state: where a stored reversal is in store-and-forward.
REVERSAL_STATES: tuple[str, ...] = ("pending", "done", "failed", "resolved")
_STATE_NAMES = frozenset(TxnState)


def _require_aware(name: str, value: datetime) -> None:
    # A naive datetime would be stored as if it were UTC in one backend and rejected or
    # shifted in the other; refuse it here so both journals hold the same instant.
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {value!r}")


class Intake(msgspec.Struct, frozen=True):
    """Written when a request is accepted for processing."""

    txn_id: str  # uuid4 hex made by the switch
    received_at: datetime  # UTC, tz-aware
    business_day: date
    mti: str  # "0200" / "0201"
    acquirer_id: str  # field 32
    tracking_code: str  # field 37
    stan: str  # field 11
    transmitted_at: str | None  # field 7 as sent (MMDDhhmmss)
    terminal_id: str | None  # field 41
    merchant_id: str | None  # field 42
    card_masked: str | None  # field 2, first 6 + last 4
    msisdn: str | None  # normalised international digits, or raw if normalising failed
    amount: int | None
    currency: str | None
    channel: str | None  # field 48 CH
    uses_key: bool  # claims the dedupe key (acquirer_id, tracking_code, business_day)
    # Set when the request is about to go to an operator: whom, and the switch's own reference
    # there (STAN and send time; opcjson uses txn_id), so a reversal can name it after a crash.
    routed_operator: str | None = None
    operator_stan: str | None = None
    operator_sent_at: datetime | None = None

    def __post_init__(self) -> None:
        _require_aware("received_at", self.received_at)
        if self.operator_sent_at is not None:
            _require_aware("operator_sent_at", self.operator_sent_at)


class Outcome(msgspec.Struct, frozen=True):
    """Written when the transaction ends, and for each later event about it
    (`event`: "end" for the end itself, "late_answer" when an operator answers after
    the switch gave up: the state and the acquirer's 39 stay, the operator's code and
    reference are recorded). The view shows the latest row."""

    txn_id: str
    ended_at: datetime
    state: str  # a TxnState
    response_code: str  # field 39 sent to the acquirer
    operator_id: str | None
    operator_ref: str | None  # the operator's transaction id
    approval_code: str | None  # field 38
    operator_code: str | None  # the raw code the operator answered, if any
    latency_ms: float  # received_at -> outcome
    event: str = "end"  # one of EVENTS

    def __post_init__(self) -> None:
        _require_aware("ended_at", self.ended_at)
        if self.event not in EVENTS:
            raise ValueError(f"event must be one of {list(EVENTS)}, got {self.event!r}")
        if self.state not in _STATE_NAMES:
            raise ValueError(f"state must be one of {[state.value for state in TxnState]}, got {self.state!r}")


class TransactionView(msgspec.Struct, frozen=True):
    """One row of the ``transactions`` view: an intake and its latest outcome.

    The outcome fields are None while the transaction has no outcome yet.
    """

    # Intake
    txn_id: str
    received_at: datetime
    business_day: date
    mti: str
    acquirer_id: str
    tracking_code: str
    stan: str
    transmitted_at: str | None
    terminal_id: str | None
    merchant_id: str | None
    card_masked: str | None
    msisdn: str | None
    amount: int | None
    currency: str | None
    channel: str | None
    uses_key: bool
    routed_operator: str | None
    operator_stan: str | None
    operator_sent_at: datetime | None
    # Latest outcome
    state: str | None
    response_code: str | None
    operator_id: str | None
    operator_ref: str | None
    approval_code: str | None
    operator_code: str | None
    ended_at: datetime | None
    latency_ms: float | None


class AdminEvent(msgspec.Struct, frozen=True):
    """A change a person made through the admin server (a reload, a reversal resolved by hand)."""

    at: datetime
    actor: str      # the admin user
    action: str     # "reload", "resolve"
    detail: str | None


class JournalError(AirswitchError):
    """Base class of everything the journal raises on purpose."""


class JournalOverloaded(JournalError):
    """The write queue is full; nothing was queued. Answer 96 at once."""


class JournalUnavailable(JournalError):
    """The record was not confirmed as committed: the database failed, the commit did
    not finish within commit_timeout, or the journal is not running."""


class JournalRejected(JournalUnavailable):
    """The database refused this one record (a constraint or a bad value, e.g. an
    outcome for a txn_id that has no intake). The other records of its batch were
    committed. A subclass of JournalUnavailable because, for the caller, the record
    was not stored all the same."""


class Reversal(msgspec.Struct, frozen=True):
    """A reversal the switch owes an operator: stored (with the outcome that creates the debt)
    before anything is acknowledged, then sent and repeated until the operator answers."""

    txn_id: str
    operator_id: str
    reason: str  # "unknown_outcome" | "acquirer_reversal" | "crash_recovery"
    created_at: datetime


class ReversalUpdate(msgspec.Struct, frozen=True):
    """What happened to a stored reversal: another attempt, or its end."""

    txn_id: str
    state: str  # one of REVERSAL_STATES
    attempts: int
    next_attempt_at: datetime
    last_error: str | None = None
    operator_code: str | None = None


class PendingReversal(msgspec.Struct, frozen=True):
    """A stored reversal, in any of its states, with what it takes to build the operator's message."""

    txn_id: str
    operator_id: str
    reason: str
    state: str
    attempts: int
    created_at: datetime
    next_attempt_at: datetime
    last_error: str | None
    acquirer_id: str
    tracking_code: str
    msisdn: str | None
    amount: int | None
    currency: str | None
    operator_stan: str | None
    operator_sent_at: datetime | None
    operator_code: str | None = None  # the operator's last answer to it, if any


class TransactionQuery(msgspec.Struct, frozen=True, kw_only=True):
    """What the admin API searches transactions by; every field set narrows the search.

    Results are newest first; `before` (the received_at and txn_id of the last row of the
    previous page) continues a search where that page ended."""

    msisdn: str | None = None          # normalised international digits, as the journal keeps them
    tracking_code: str | None = None
    acquirer_id: str | None = None
    operator_id: str | None = None     # routed to it, or answered by it
    state: str | None = None           # a TxnState, or "in_flight" for no outcome yet
    since: datetime | None = None      # received at or after
    until: datetime | None = None      # received before
    before: tuple[datetime, str] | None = None

    def __post_init__(self) -> None:
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None:
                _require_aware(name, value)
        if self.before is not None:
            _require_aware("before", self.before[0])
        if self.state is not None and self.state != "in_flight" and self.state not in _STATE_NAMES:
            raise ValueError(f"state must be one of {[s.value for s in TxnState] + ['in_flight']}, got {self.state!r}")


class ThroughputRow(msgspec.Struct, frozen=True):
    """Top-ups that reached their end with one operator in one minute (by the minute they were received)."""

    minute: datetime   # UTC, the minute's start
    operator_id: str
    answered: int      # top-ups with an "end" row naming this operator
    approved: int      # of which answered 00


class ReversalQueueRow(msgspec.Struct, frozen=True):
    """Stored reversals not yet settled, per operator and queue state ("pending" or "failed")."""

    operator_id: str
    state: str
    count: int
    oldest_created_at: datetime
