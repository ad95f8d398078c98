"""The journal's schema, for both backends: DDL, migrations and the column lists.

Each backend has an ordered tuple of migrations; migration N (1-based) is a tuple of
SQL statements, applied in one transaction together with the row recording version N in
``schema_version``. Never edit a migration that has shipped: append a new one.

Both backends hold the same shape:

- ``intake``: append-only, one row per accepted request, primary key txn_id, and a
  partial UNIQUE index on (acquirer_id, tracking_code, business_day) WHERE uses_key:
  the dedupe key. Only intakes that claim the key are in that index, so refusals and
  other uses_key=False intakes never conflict.
- ``outcome``: append-only, how each transaction ended; txn_id references intake (SQLite:
  a foreign key; Postgres from version 2: a statement trigger, checked once a batch). More
  than one outcome per txn_id is allowed (nothing is ever updated); the view takes the
  latest.
- ``transactions``: view, one row per intake with its latest outcome (or NULLs).
- ``schema_version(version, applied_at)``.

Statements are kept one per string because SQLite's executescript() commits whatever
transaction is open, which would break the all-or-nothing migration.

The CHECK constraints on states and events are generated from ``TxnState`` and the
lists in records.py, so the names are spelled in one place. A database keeps the list it
was created with: a new state or event needs a new migration (Postgres: drop and re-add
``outcome_state_check`` / ``outcome_event_check``; SQLite: rebuild the table).
tests/test_journal.py keeps the lists migration 1 shipped with, and fails until then.

The reads both backends run are here too, written once with numbered parameters
(``$1`` for Postgres, turned into SQLite's ``?1`` by ``sqlite_placeholders``).
"""

from __future__ import annotations

from switch.flow.states import TxnState

from .records import EVENTS, REVERSAL_STATES, Intake, Outcome, PendingReversal, TransactionQuery, TransactionView

INTAKE_COLUMNS: tuple[str, ...] = Intake.__struct_fields__
OUTCOME_COLUMNS: tuple[str, ...] = Outcome.__struct_fields__
VIEW_COLUMNS: tuple[str, ...] = TransactionView.__struct_fields__


def _one_of(column: str, values) -> str:
    listed = ", ".join(f"'{value}'" for value in values)
    return f"CHECK ({column} IN ({listed}))"


_STATE_CHECK = _one_of("state", TxnState)
_EVENT_CHECK = _one_of("event", EVENTS)
_REVERSAL_STATE_CHECK = _one_of("state", REVERSAL_STATES)

# -- reads, shared by both backends ----------------------------------------------------

_SELECT_VIEW = f"SELECT {', '.join(VIEW_COLUMNS)} FROM transactions"
# "AND uses_key" lets the planner use the partial unique index.
FIND = f"{_SELECT_VIEW} WHERE acquirer_id = $1 AND tracking_code = $2 AND business_day = $3 AND uses_key"
FIND_LATEST = (f"{_SELECT_VIEW} WHERE acquirer_id = $1 AND tracking_code = $2 AND uses_key"
               " ORDER BY received_at DESC LIMIT 1")
FIND_TXN = f"{_SELECT_VIEW} WHERE txn_id = $1"
ORPHANS = (f"{_SELECT_VIEW} WHERE routed_operator IS NOT NULL AND state IS NULL"
           " AND received_at >= $1 AND received_at < $2 ORDER BY received_at")
COUNT_BY_STATE = "SELECT coalesce(state, 'in flight'), count(*) FROM transactions GROUP BY 1"
APPROVED_AT_OPERATORS = (
    "SELECT txn_id, routed_operator, operator_stan, operator_sent_at, tracking_code, msisdn, amount"
    f" FROM transactions WHERE state = '{TxnState.APPROVED}' ORDER BY received_at"
)
APPROVED_ANSWERS = "SELECT acquirer_id, tracking_code FROM transactions WHERE response_code = '00'"
HISTORY = ("SELECT ended_at, state, event, response_code, operator_code, operator_ref FROM outcome"
           " WHERE txn_id = $1 ORDER BY ended_at, id")
COUNT_TRANSACTIONS = "SELECT count(*) FROM transactions"
SUMMARY = "SELECT coalesce(response_code, 'pending'), count(*) FROM transactions GROUP BY 1"
# A stored reversal with the intake it undoes, in PendingReversal's field order: the fields
# named like intake columns come from the intake, the rest (and txn_id) from the reversal.
_PENDING_COLUMNS = ", ".join(("i." if field in INTAKE_COLUMNS and field != "txn_id" else "r.") + field
                             for field in PendingReversal.__struct_fields__)
SELECT_REVERSAL = f"SELECT {_PENDING_COLUMNS} FROM reversal r JOIN intake i USING (txn_id)"
FIND_REVERSAL = f"{SELECT_REVERSAL} WHERE r.txn_id = $1"
REVERSALS_ORDER = " ORDER BY r.operator_id, r.created_at"
# Every outcome row of a transaction, late answers included, in the order they were written.
OUTCOMES = f"SELECT {', '.join(OUTCOME_COLUMNS)} FROM outcome WHERE txn_id = $1 ORDER BY ended_at, id"
# The store-and-forward queue at a glance (reversal_due_idx serves it).
REVERSAL_QUEUE = ("SELECT operator_id, state, count(*), min(created_at) FROM reversal"
                  " WHERE state IN ('pending', 'failed') GROUP BY operator_id, state ORDER BY operator_id, state")
PING = "SELECT 1"
# Top-ups per minute and operator since $1, and how many were approved: the console's dashboard.
# Served by intake_received_at_idx and outcome_txn_idx; the minute is cut differently per backend.
_THROUGHPUT = ("SELECT {minute}, o.operator_id, count(*), {approved} FROM intake i"
               " JOIN outcome o ON o.txn_id = i.txn_id AND o.event = 'end'"
               " WHERE i.received_at >= $1 AND o.operator_id IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 2")
THROUGHPUT_POSTGRES = _THROUGHPUT.format(minute="date_trunc('minute', i.received_at)",
                                         approved="count(*) FILTER (WHERE o.response_code = '00')")
# SQLite keeps times as fixed-width UTC ISO text: its first 16 characters are the minute.
THROUGHPUT_SQLITE = _THROUGHPUT.format(minute="substr(i.received_at, 1, 16)",
                                       approved="sum(o.response_code = '00')")


def search_query(query: TransactionQuery, limit: int) -> tuple[str, list]:
    """The transactions matching `query`, newest first, at most `limit`: (SQL with $n, parameters).
    Parameters are given as Python values; a store converts them as it stores them."""
    clauses: list[str] = []
    params: list = []

    def where(clause: str, *values) -> None:
        numbers = range(len(params) + 1, len(params) + len(values) + 1)
        clauses.append(clause.format(*(f"${n}" for n in numbers)))
        params.extend(values)

    if query.msisdn is not None:
        where("msisdn = {}", query.msisdn)
    if query.tracking_code is not None:
        where("tracking_code = {}", query.tracking_code)
    if query.acquirer_id is not None:
        where("acquirer_id = {}", query.acquirer_id)
    if query.operator_id is not None:
        where("(routed_operator = {0} OR operator_id = {0})", query.operator_id)
    if query.state == "in_flight":
        clauses.append("state IS NULL")
    elif query.state is not None:
        where("state = {}", query.state)
    if query.since is not None:
        where("received_at >= {}", query.since)
    if query.until is not None:
        where("received_at < {}", query.until)
    if query.before is not None:
        where("(received_at < {0} OR (received_at = {0} AND txn_id < {1}))", *query.before)
    sql = _SELECT_VIEW
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    params.append(limit)
    return sql + " ORDER BY received_at DESC, txn_id DESC LIMIT $" + str(len(params)), params


def sqlite_placeholders(query: str) -> str:
    """The same query with SQLite's numbered parameters (?1) for Postgres's ($1)."""
    return query.replace("$", "?")

# -- PostgreSQL ---------------------------------------------------------------------

POSTGRES_SCHEMA_VERSION_DDL = """
CREATE TABLE IF NOT EXISTS schema_version (
    version    integer PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""

# Element types for the unnest() batch inserts, in struct field order.
POSTGRES_INTAKE_TYPES: dict[str, str] = {
    "txn_id": "text",
    "received_at": "timestamptz",
    "business_day": "date",
    "mti": "text",
    "acquirer_id": "text",
    "tracking_code": "text",
    "stan": "text",
    "transmitted_at": "text",
    "terminal_id": "text",
    "merchant_id": "text",
    "card_masked": "text",
    "msisdn": "text",
    "amount": "bigint",
    "currency": "text",
    "channel": "text",
    "uses_key": "boolean",
    "routed_operator": "text",
    "operator_stan": "text",
    "operator_sent_at": "timestamptz",
}
POSTGRES_OUTCOME_TYPES: dict[str, str] = {
    "txn_id": "text",
    "ended_at": "timestamptz",
    "state": "text",
    "response_code": "text",
    "operator_id": "text",
    "operator_ref": "text",
    "approval_code": "text",
    "operator_code": "text",
    "latency_ms": "double precision",
    "event": "text",
}

_POSTGRES_V1: tuple[str, ...] = (
    """
    CREATE TABLE intake (
        txn_id          text PRIMARY KEY,
        received_at     timestamptz NOT NULL,
        business_day    date NOT NULL,
        mti             text NOT NULL,
        acquirer_id     text NOT NULL,
        tracking_code   text NOT NULL,
        stan            text NOT NULL,
        transmitted_at  text,
        terminal_id     text,
        merchant_id     text,
        card_masked     text,
        msisdn          text,
        amount          bigint,
        currency        text,
        channel         text,
        uses_key        boolean NOT NULL,
        routed_operator text,
        operator_stan   text,
        operator_sent_at timestamptz
    )""",
    """
    CREATE UNIQUE INDEX intake_key_uq
        ON intake (acquirer_id, tracking_code, business_day) WHERE uses_key""",
    "CREATE INDEX intake_msisdn_idx ON intake (msisdn)",
    "CREATE INDEX intake_received_at_idx ON intake (received_at)",
    "CREATE INDEX intake_tracking_code_idx ON intake (tracking_code)",
    f"""
    CREATE TABLE outcome (
        id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        txn_id          text NOT NULL REFERENCES intake (txn_id),
        ended_at        timestamptz NOT NULL,
        state           text NOT NULL
                        {_STATE_CHECK},
        response_code   text NOT NULL,
        operator_id     text,
        operator_ref    text,
        approval_code   text,
        operator_code   text,
        latency_ms      double precision NOT NULL,
        event           text NOT NULL DEFAULT 'end'
                        {_EVENT_CHECK}
    )""",
    # Serves both the FK lookups and "latest outcome of this txn" in the view.
    "CREATE INDEX outcome_txn_idx ON outcome (txn_id, ended_at DESC, id DESC)",
    # Append-only is enforced, not just promised. (TRUNCATE, for a deliberate purge by
    # an operator, is not a row event and still works.)
    """
    CREATE FUNCTION journal_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'journal table % is append-only', TG_TABLE_NAME;
    END
    $$""",
    """
    CREATE TRIGGER intake_append_only BEFORE UPDATE OR DELETE ON intake
        FOR EACH ROW EXECUTE FUNCTION journal_append_only()""",
    """
    CREATE TRIGGER outcome_append_only BEFORE UPDATE OR DELETE ON outcome
        FOR EACH ROW EXECUTE FUNCTION journal_append_only()""",
    """
    CREATE VIEW transactions AS
    SELECT i.txn_id, i.received_at, i.business_day, i.mti, i.acquirer_id,
           i.tracking_code, i.stan, i.transmitted_at, i.terminal_id, i.merchant_id,
           i.card_masked, i.msisdn, i.amount, i.currency, i.channel, i.uses_key,
           i.routed_operator, i.operator_stan, i.operator_sent_at,
           o.state, o.response_code, o.operator_id, o.operator_ref, o.approval_code,
           o.operator_code, o.ended_at, o.latency_ms
      FROM intake i
      LEFT JOIN LATERAL (
            SELECT *
              FROM outcome o
             WHERE o.txn_id = i.txn_id AND o.event <> 'late_answer'  -- a late answer records, it does not decide
             ORDER BY o.ended_at DESC, o.id DESC
             LIMIT 1
      ) o ON true""",
    # The reversals the switch owes operators (store-and-forward). A work queue, so rows
    # change state; every change is also journaled as an outcome row of the transaction.
    f"""
    CREATE TABLE reversal (
        txn_id          text PRIMARY KEY REFERENCES intake (txn_id),
        operator_id     text NOT NULL,
        reason          text NOT NULL,
        created_at      timestamptz NOT NULL,
        state           text NOT NULL DEFAULT 'pending'
                        {_REVERSAL_STATE_CHECK},
        attempts        integer NOT NULL DEFAULT 0,
        next_attempt_at timestamptz NOT NULL,
        last_error      text,
        operator_code   text
    )""",
    "CREATE INDEX reversal_due_idx ON reversal (state, operator_id, created_at)",
    # Spill files replayed into the journal, so a replay interrupted after its commit is
    # never applied twice.
    """
    CREATE TABLE spill_replayed (
        segment     text PRIMARY KEY,
        replayed_at timestamptz NOT NULL DEFAULT now(),
        records     integer NOT NULL
    )""",
)

# Version 2: an outcome's intake is checked once a statement instead of once a row. The
# foreign key ran a query and took a row lock on the intake for every outcome (about 16 us of
# server CPU a row, the largest single cost of a batch); the statement trigger checks the
# whole COPY with one anti-join against intake's primary key. It is as strict for the
# journal: intake rows are never updated or deleted (the append-only triggers), so the lock
# the foreign key took protected nothing, and an outcome whose intake is not there (nor
# committed, nor in its own transaction) is refused with the same SQLSTATE 23503. See
# docs/decisions.md, "Journal: the outcome's intake checked per statement".
_POSTGRES_V2: tuple[str, ...] = (
    "ALTER TABLE outcome DROP CONSTRAINT outcome_txn_id_fkey",
    # SET search_path FROM CURRENT: the journal's schema at migration time, whoever inserts.
    """
    CREATE FUNCTION journal_outcome_has_intake() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
    DECLARE
        orphan text;
    BEGIN
        SELECT n.txn_id INTO orphan
          FROM new_outcomes n
         WHERE NOT EXISTS (SELECT 1 FROM intake i WHERE i.txn_id = n.txn_id)
         LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'outcome of txn % has no intake', orphan
                USING ERRCODE = 'foreign_key_violation', TABLE = 'outcome';
        END IF;
        RETURN NULL;
    END
    $$""",
    """
    CREATE TRIGGER outcome_has_intake AFTER INSERT ON outcome
        REFERENCING NEW TABLE AS new_outcomes
        FOR EACH STATEMENT EXECUTE FUNCTION journal_outcome_has_intake()""",
)

# Version 3: what people change through the admin server (a reload, a reversal resolved by hand),
# with who did it. Append-only like the rest of the journal. Rare: written at once, not batched.
_POSTGRES_V3: tuple[str, ...] = (
    """
    CREATE TABLE admin_event (
        id      bigserial PRIMARY KEY,
        at      timestamptz NOT NULL,
        actor   text NOT NULL,
        action  text NOT NULL,
        detail  text
    )""",
    """
    CREATE TRIGGER admin_event_append_only BEFORE UPDATE OR DELETE ON admin_event
        FOR EACH ROW EXECUTE FUNCTION journal_append_only()""",
)

POSTGRES_MIGRATIONS: tuple[tuple[str, ...], ...] = (_POSTGRES_V1, _POSTGRES_V2, _POSTGRES_V3)

# -- SQLite ---------------------------------------------------------------------------
# Times are ISO 8601 text in UTC with microseconds (always the same width, so text
# order is time order); business_day is ISO date text; uses_key is 0/1.

SQLITE_SCHEMA_VERSION_DDL = """
CREATE TABLE IF NOT EXISTS schema_version (
    version    INTEGER PRIMARY KEY,
    applied_at TEXT NOT NULL
)"""

_SQLITE_V1: tuple[str, ...] = (
    # NOT NULL on the text primary key: SQLite otherwise accepts NULL keys.
    """
    CREATE TABLE intake (
        txn_id          TEXT NOT NULL PRIMARY KEY,
        received_at     TEXT NOT NULL,
        business_day    TEXT NOT NULL,
        mti             TEXT NOT NULL,
        acquirer_id     TEXT NOT NULL,
        tracking_code   TEXT NOT NULL,
        stan            TEXT NOT NULL,
        transmitted_at  TEXT,
        terminal_id     TEXT,
        merchant_id     TEXT,
        card_masked     TEXT,
        msisdn          TEXT,
        amount          INTEGER,
        currency        TEXT,
        channel         TEXT,
        uses_key        INTEGER NOT NULL CHECK (uses_key IN (0, 1)),
        routed_operator TEXT,
        operator_stan   TEXT,
        operator_sent_at TEXT
    )""",
    """
    CREATE UNIQUE INDEX intake_key_uq
        ON intake (acquirer_id, tracking_code, business_day) WHERE uses_key""",
    "CREATE INDEX intake_msisdn_idx ON intake (msisdn)",
    "CREATE INDEX intake_received_at_idx ON intake (received_at)",
    "CREATE INDEX intake_tracking_code_idx ON intake (tracking_code)",
    # id is the rowid: it only grows (nothing is deleted), so it breaks ended_at ties.
    f"""
    CREATE TABLE outcome (
        id              INTEGER PRIMARY KEY,
        txn_id          TEXT NOT NULL REFERENCES intake (txn_id),
        ended_at        TEXT NOT NULL,
        state           TEXT NOT NULL
                        {_STATE_CHECK},
        response_code   TEXT NOT NULL,
        operator_id     TEXT,
        operator_ref    TEXT,
        approval_code   TEXT,
        operator_code   TEXT,
        latency_ms      REAL NOT NULL,
        event           TEXT NOT NULL DEFAULT 'end'
                        {_EVENT_CHECK}
    )""",
    "CREATE INDEX outcome_txn_idx ON outcome (txn_id, ended_at, id)",
    """
    CREATE TRIGGER intake_no_update BEFORE UPDATE ON intake
    BEGIN SELECT RAISE(ABORT, 'journal table intake is append-only'); END""",
    """
    CREATE TRIGGER intake_no_delete BEFORE DELETE ON intake
    BEGIN SELECT RAISE(ABORT, 'journal table intake is append-only'); END""",
    """
    CREATE TRIGGER outcome_no_update BEFORE UPDATE ON outcome
    BEGIN SELECT RAISE(ABORT, 'journal table outcome is append-only'); END""",
    """
    CREATE TRIGGER outcome_no_delete BEFORE DELETE ON outcome
    BEGIN SELECT RAISE(ABORT, 'journal table outcome is append-only'); END""",
    """
    CREATE VIEW transactions AS
    SELECT i.txn_id, i.received_at, i.business_day, i.mti, i.acquirer_id,
           i.tracking_code, i.stan, i.transmitted_at, i.terminal_id, i.merchant_id,
           i.card_masked, i.msisdn, i.amount, i.currency, i.channel, i.uses_key,
           i.routed_operator, i.operator_stan, i.operator_sent_at,
           o.state, o.response_code, o.operator_id, o.operator_ref, o.approval_code,
           o.operator_code, o.ended_at, o.latency_ms
      FROM intake i
      LEFT JOIN outcome o
        ON o.id = (SELECT o2.id
                     FROM outcome o2
                    WHERE o2.txn_id = i.txn_id AND o2.event <> 'late_answer'
                    ORDER BY o2.ended_at DESC, o2.id DESC
                    LIMIT 1)""",
    f"""
    CREATE TABLE reversal (
        txn_id          TEXT NOT NULL PRIMARY KEY REFERENCES intake (txn_id),
        operator_id     TEXT NOT NULL,
        reason          TEXT NOT NULL,
        created_at      TEXT NOT NULL,
        state           TEXT NOT NULL DEFAULT 'pending'
                        {_REVERSAL_STATE_CHECK},
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT NOT NULL,
        last_error      TEXT,
        operator_code   TEXT
    )""",
    "CREATE INDEX reversal_due_idx ON reversal (state, operator_id, created_at)",
)

_SQLITE_V2: tuple[str, ...] = (   # Postgres version 3: the admin's audit
    """
    CREATE TABLE admin_event (
        id      INTEGER PRIMARY KEY,
        at      TEXT NOT NULL,
        actor   TEXT NOT NULL,
        action  TEXT NOT NULL,
        detail  TEXT
    )""",
    """
    CREATE TRIGGER admin_event_no_update BEFORE UPDATE ON admin_event
    BEGIN SELECT RAISE(ABORT, 'admin_event is append-only'); END""",
    """
    CREATE TRIGGER admin_event_no_delete BEFORE DELETE ON admin_event
    BEGIN SELECT RAISE(ABORT, 'admin_event is append-only'); END""",
)

SQLITE_MIGRATIONS: tuple[tuple[str, ...], ...] = (_SQLITE_V1, _SQLITE_V2)

INSERT_ADMIN_EVENT = "INSERT INTO admin_event (at, actor, action, detail) VALUES ($1, $2, $3, $4)"
ADMIN_EVENTS = "SELECT at, actor, action, detail FROM admin_event ORDER BY id DESC LIMIT $1"

assert tuple(POSTGRES_INTAKE_TYPES) == INTAKE_COLUMNS
assert tuple(POSTGRES_OUTCOME_TYPES) == OUTCOME_COLUMNS
