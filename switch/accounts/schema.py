"""The float ledger's PostgreSQL schema: tables, rules and the functions that move money.

Migration N (1-based) is a tuple of SQL statements applied in one transaction together
with the row recording version N in ``accounts_schema_version`` (its own table: the
journal may share the schema and has its own ``schema_version``). Never edit a migration
that has shipped: append a new one.

Tables:

- ``account``: one row per acquirer or agent; ``parent_id`` makes an agent's sub-agents.
  Never updated or deleted (trigger): the parent and currency an account was opened with
  are the ones every transfer is checked against, and a parent must exist before its
  child, so the tree has no cycles.
- ``account_balance``: the hot row. ``balance`` and ``held`` are caches of the sums of
  ``ledger_entry.amount`` and ``ledger_entry.held_change``, updated in the same
  transaction as each entry; ``credit_limit`` lives here so that a hold is one row's
  conditional UPDATE. The CHECK ``balance - held + credit_limit >= 0`` is the backstop
  behind every conditional UPDATE: no code path can leave the float below its limit.
- ``ledger_entry``: append-only (trigger refuses UPDATE, DELETE and TRUNCATE). One row
  per movement: ``amount`` is what it does to the balance, ``held_change`` what it does
  to the amount held, and ``balance_after`` / ``held_after`` the account's values right
  after it. Entries of one account are numbered in the order they took the account's
  row lock, so ``id`` order is the order they happened in.
- ``float_hold``: one row per top-up txn_id, a small state machine
  held -> captured -> refunded, held -> released. Every transition is an
  ``UPDATE ... WHERE state = <from>``, so each happens exactly once however many
  callers race. A release of a txn that holds nothing leaves a tombstone (released,
  no account, amount 0) so that a hold arriving after it cannot take float.

Kinds, with the sign of (amount, held_change):

    deposit      (+, 0)     adjustment (+ or -, 0), note required
    transfer_out (-, 0)     transfer_in (+, 0)      both rows in one transaction
    hold         (0, +)     capture    (-, -)       release (0, -)     refund (+, 0)

Functions (one call = one statement = one round trip = one transaction): each takes the
account's row lock with a conditional UPDATE, never SELECT-then-UPDATE, and raises with
its own SQLSTATE: ``AS001`` insufficient float, ``AS002`` unknown account, ``AS003`` a
rule refused the operation, ``AS004`` no hold for that txn. Locks are taken in one order
(``float_hold`` row, then ``account_balance`` rows by account_id), so they cannot deadlock.
"""

from __future__ import annotations

SCHEMA_VERSION_TABLE = "accounts_schema_version"

SCHEMA_VERSION_DDL = f"""
CREATE TABLE IF NOT EXISTS {SCHEMA_VERSION_TABLE} (
    version    integer PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""

# SQLSTATEs raised by the functions below (class "AS" is not used by PostgreSQL).
SQLSTATE_INSUFFICIENT_FLOAT = "AS001"
SQLSTATE_UNKNOWN_ACCOUNT = "AS002"
SQLSTATE_REFUSED = "AS003"
SQLSTATE_UNKNOWN_HOLD = "AS004"

KINDS = ("deposit", "adjustment", "transfer_out", "transfer_in", "hold", "capture", "release", "refund")
HOLD_STATES = ("held", "captured", "released", "refunded")

ENTRY_COLUMNS: tuple[str, ...] = (
    "id", "at", "account_id", "txn_id", "kind", "amount", "held_change",
    "balance_after", "held_after", "note", "actor",
)

# Every function binds its table names to the schema it was created in
# (SET search_path FROM CURRENT; the migration runs with search_path set to it).
_V1: tuple[str, ...] = (
    """
    CREATE TABLE account (
        account_id  text PRIMARY KEY CHECK (account_id <> ''),
        parent_id   text REFERENCES account (account_id) CHECK (parent_id <> account_id),
        currency    text NOT NULL CHECK (currency ~ '^[0-9]{3}$'),
        opened_at   timestamptz NOT NULL DEFAULT now()
    )""",
    "CREATE INDEX account_parent_idx ON account (parent_id) WHERE parent_id IS NOT NULL",
    """
    CREATE TABLE account_balance (
        account_id    text PRIMARY KEY REFERENCES account (account_id),
        balance       bigint NOT NULL DEFAULT 0,
        held          bigint NOT NULL DEFAULT 0 CHECK (held >= 0),
        credit_limit  bigint NOT NULL DEFAULT 0 CHECK (credit_limit >= 0),
        updated_at    timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT account_balance_within_credit_limit CHECK (balance - held + credit_limit >= 0)
    )""",
    """
    CREATE TABLE ledger_entry (
        id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        at             timestamptz NOT NULL DEFAULT now(),
        account_id     text NOT NULL REFERENCES account (account_id),
        txn_id         text,
        kind           text NOT NULL,
        amount         bigint NOT NULL,
        held_change    bigint NOT NULL,
        balance_after  bigint NOT NULL,
        held_after     bigint NOT NULL CHECK (held_after >= 0),
        note           text,
        actor          text NOT NULL CHECK (actor <> ''),
        CONSTRAINT ledger_entry_kind_signs CHECK (CASE kind
            WHEN 'deposit'      THEN amount > 0 AND held_change = 0
            WHEN 'adjustment'   THEN amount <> 0 AND held_change = 0 AND coalesce(note, '') <> ''
            WHEN 'transfer_out' THEN amount < 0 AND held_change = 0 AND txn_id IS NOT NULL
            WHEN 'transfer_in'  THEN amount > 0 AND held_change = 0 AND txn_id IS NOT NULL
            WHEN 'hold'         THEN amount = 0 AND held_change > 0 AND txn_id IS NOT NULL
            WHEN 'capture'      THEN amount < 0 AND held_change = amount AND txn_id IS NOT NULL
            WHEN 'release'      THEN amount = 0 AND held_change < 0 AND txn_id IS NOT NULL
            WHEN 'refund'       THEN amount > 0 AND held_change = 0 AND txn_id IS NOT NULL
            ELSE false END)
    )""",
    # Statements (latest first), verify() and the running-balance audit walk this index.
    "CREATE INDEX ledger_entry_account_idx ON ledger_entry (account_id, id)",
    "CREATE INDEX ledger_entry_txn_idx ON ledger_entry (txn_id) WHERE txn_id IS NOT NULL",
    """
    CREATE TABLE float_hold (
        txn_id      text PRIMARY KEY,
        account_id  text REFERENCES account (account_id),
        amount      bigint NOT NULL,
        state       text NOT NULL CHECK (state IN ('held', 'captured', 'released', 'refunded')),
        created_at  timestamptz NOT NULL DEFAULT now(),
        updated_at  timestamptz NOT NULL DEFAULT now(),
        -- a tombstone (see release) holds nothing on no account
        CONSTRAINT float_hold_shape CHECK (
            (account_id IS NOT NULL AND amount > 0)
            OR (account_id IS NULL AND amount = 0 AND state = 'released'))
    )""",
    "CREATE INDEX float_hold_open_idx ON float_hold (account_id) WHERE state = 'held'",
    """
    CREATE FUNCTION accounts_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'accounts table % is append-only', TG_TABLE_NAME;
    END
    $$""",
    """
    CREATE TRIGGER ledger_entry_append_only BEFORE UPDATE OR DELETE ON ledger_entry
        FOR EACH ROW EXECUTE FUNCTION accounts_append_only()""",
    """
    CREATE TRIGGER ledger_entry_no_truncate BEFORE TRUNCATE ON ledger_entry
        FOR EACH STATEMENT EXECUTE FUNCTION accounts_append_only()""",
    """
    CREATE TRIGGER account_append_only BEFORE UPDATE OR DELETE ON account
        FOR EACH ROW EXECUTE FUNCTION accounts_append_only()""",
    # -- open an account (idempotent) ------------------------------------------------
    """
    CREATE FUNCTION accounts_open(p_account text, p_parent text, p_currency text, p_credit_limit bigint)
    RETURNS void LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
    DECLARE
        v_parent_currency text;
        v_existing record;
    BEGIN
        IF p_parent IS NOT NULL THEN
            SELECT currency INTO v_parent_currency FROM account WHERE account_id = p_parent;
            IF NOT FOUND THEN
                RAISE EXCEPTION 'unknown parent account %', p_parent USING ERRCODE = 'AS002';
            END IF;
            IF v_parent_currency <> p_currency THEN
                RAISE EXCEPTION 'account % in currency % cannot be under % in currency %',
                    p_account, p_currency, p_parent, v_parent_currency USING ERRCODE = 'AS003';
            END IF;
        END IF;
        INSERT INTO account (account_id, parent_id, currency) VALUES (p_account, p_parent, p_currency)
            ON CONFLICT (account_id) DO NOTHING;
        IF FOUND THEN
            INSERT INTO account_balance (account_id, credit_limit) VALUES (p_account, p_credit_limit);
            RETURN;
        END IF;
        SELECT a.parent_id, a.currency, b.credit_limit INTO v_existing
          FROM account a JOIN account_balance b USING (account_id) WHERE a.account_id = p_account;
        IF v_existing.parent_id IS DISTINCT FROM p_parent OR v_existing.currency <> p_currency
           OR v_existing.credit_limit <> p_credit_limit THEN
            RAISE EXCEPTION 'account % already exists with parent %, currency %, credit limit %',
                p_account, coalesce(v_existing.parent_id, '(none)'), v_existing.currency,
                v_existing.credit_limit USING ERRCODE = 'AS003';
        END IF;
    END
    $$""",
    # -- deposit and adjustment -----------------------------------------------------------
    """
    CREATE FUNCTION accounts_post(p_account text, p_kind text, p_amount bigint, p_actor text, p_note text)
    RETURNS bigint LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
    DECLARE
        v_balance bigint;
        v_held bigint;
    BEGIN
        IF p_kind NOT IN ('deposit', 'adjustment') THEN
            RAISE EXCEPTION 'accounts_post does not post %', p_kind USING ERRCODE = 'AS003';
        END IF;
        UPDATE account_balance
           SET balance = balance + p_amount, updated_at = now()
         WHERE account_id = p_account AND balance + p_amount - held + credit_limit >= 0
        RETURNING balance, held INTO v_balance, v_held;
        IF NOT FOUND THEN
            IF NOT EXISTS (SELECT 1 FROM account_balance WHERE account_id = p_account) THEN
                RAISE EXCEPTION 'unknown account %', p_account USING ERRCODE = 'AS002';
            END IF;
            RAISE EXCEPTION '% of % would take account % below its credit limit', p_kind, p_amount, p_account
                USING ERRCODE = 'AS001';
        END IF;
        INSERT INTO ledger_entry (account_id, kind, amount, held_change, balance_after, held_after, note, actor)
        VALUES (p_account, p_kind, p_amount, 0, v_balance, v_held, p_note, p_actor);
        RETURN v_balance;
    END
    $$""",
    # -- transfer between an agent and its sub-agent ----------------------------------
    """
    CREATE FUNCTION accounts_transfer(p_from text, p_to text, p_amount bigint, p_actor text, p_note text,
                                      OUT from_balance bigint, OUT to_balance bigint)
    LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
    DECLARE
        v_from account%ROWTYPE;
        v_to account%ROWTYPE;
        v_from_held bigint;
        v_to_held bigint;
        v_ref text := 'transfer:' || gen_random_uuid()::text;
    BEGIN
        SELECT * INTO v_from FROM account WHERE account_id = p_from;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'unknown account %', p_from USING ERRCODE = 'AS002';
        END IF;
        SELECT * INTO v_to FROM account WHERE account_id = p_to;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'unknown account %', p_to USING ERRCODE = 'AS002';
        END IF;
        IF v_from.parent_id IS DISTINCT FROM p_to AND v_to.parent_id IS DISTINCT FROM p_from THEN
            RAISE EXCEPTION 'transfer refused: % and % are not an agent and its sub-agent', p_from, p_to
                USING ERRCODE = 'AS003';
        END IF;
        -- Both rows, in account_id order: two opposite transfers cannot deadlock.
        PERFORM 1 FROM account_balance WHERE account_id IN (p_from, p_to) ORDER BY account_id FOR UPDATE;
        UPDATE account_balance
           SET balance = balance - p_amount, updated_at = now()
         WHERE account_id = p_from AND balance - p_amount - held + credit_limit >= 0
        RETURNING balance, held INTO from_balance, v_from_held;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'transfer of % would take account % below its credit limit', p_amount, p_from
                USING ERRCODE = 'AS001';
        END IF;
        UPDATE account_balance SET balance = balance + p_amount, updated_at = now()
         WHERE account_id = p_to
        RETURNING balance, held INTO to_balance, v_to_held;
        INSERT INTO ledger_entry (account_id, txn_id, kind, amount, held_change, balance_after, held_after, note, actor)
        VALUES (p_from, v_ref, 'transfer_out', -p_amount, 0, from_balance, v_from_held, p_note, p_actor),
               (p_to, v_ref, 'transfer_in', p_amount, 0, to_balance, v_to_held, p_note, p_actor);
    END
    $$""",
    # -- hold: reserve float for a top-up (idempotent per txn_id) -----------------------
    """
    CREATE FUNCTION accounts_hold(p_account text, p_txn text, p_amount bigint, p_actor text)
    RETURNS bigint LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
    DECLARE
        v_balance bigint;
        v_held bigint;
        v_available bigint;
        v_existing float_hold%ROWTYPE;
    BEGIN
        PERFORM 1 FROM account WHERE account_id = p_account;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'unknown account %', p_account USING ERRCODE = 'AS002';
        END IF;
        -- Claims the txn first: a concurrent hold of the same txn waits here for this
        -- one to commit (then finds it) or roll back (then holds itself).
        INSERT INTO float_hold (txn_id, account_id, amount, state) VALUES (p_txn, p_account, p_amount, 'held')
            ON CONFLICT (txn_id) DO NOTHING;
        IF NOT FOUND THEN
            SELECT * INTO v_existing FROM float_hold WHERE txn_id = p_txn;
            IF v_existing.account_id IS NULL THEN
                RAISE EXCEPTION 'txn % was released before its hold arrived', p_txn USING ERRCODE = 'AS003';
            END IF;
            IF v_existing.account_id <> p_account OR v_existing.amount <> p_amount THEN
                RAISE EXCEPTION 'txn % already holds % on account %', p_txn, v_existing.amount,
                    v_existing.account_id USING ERRCODE = 'AS003';
            END IF;
            SELECT balance - held + credit_limit INTO v_available FROM account_balance WHERE account_id = p_account;
            RETURN v_available;  -- a repeat: the first hold stands
        END IF;
        -- The row lock serialises competitors; the WHERE is re-checked on the row as
        -- the previous holder committed it, so the last unit of float goes to one of them.
        UPDATE account_balance
           SET held = held + p_amount, updated_at = now()
         WHERE account_id = p_account AND balance - held + credit_limit >= p_amount
        RETURNING balance, held, balance - held + credit_limit INTO v_balance, v_held, v_available;
        IF NOT FOUND THEN
            SELECT balance - held + credit_limit INTO v_available FROM account_balance WHERE account_id = p_account;
            RAISE EXCEPTION 'insufficient float on account %: % available, % asked', p_account, v_available, p_amount
                USING ERRCODE = 'AS001';
        END IF;
        INSERT INTO ledger_entry (account_id, txn_id, kind, amount, held_change, balance_after, held_after, actor)
        VALUES (p_account, p_txn, 'hold', 0, p_amount, v_balance, v_held, p_actor);
        RETURN v_available;
    END
    $$""",
    # -- capture: the top-up was approved, the hold becomes a debit ----------------------
    """
    CREATE FUNCTION accounts_capture(p_txn text, p_actor text)
    RETURNS void LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
    DECLARE
        v_account text;
        v_amount bigint;
        v_state text;
        v_balance bigint;
        v_held bigint;
    BEGIN
        UPDATE float_hold SET state = 'captured', updated_at = now()
         WHERE txn_id = p_txn AND state = 'held'
        RETURNING account_id, amount INTO v_account, v_amount;
        IF NOT FOUND THEN
            SELECT state INTO v_state FROM float_hold WHERE txn_id = p_txn;
            IF NOT FOUND THEN
                RAISE EXCEPTION 'no hold for txn %', p_txn USING ERRCODE = 'AS004';
            END IF;
            IF v_state IN ('captured', 'refunded') THEN
                RETURN;  -- already captured
            END IF;
            RAISE EXCEPTION 'cannot capture txn %: its hold was released', p_txn USING ERRCODE = 'AS003';
        END IF;
        UPDATE account_balance
           SET balance = balance - v_amount, held = held - v_amount, updated_at = now()
         WHERE account_id = v_account
        RETURNING balance, held INTO v_balance, v_held;
        INSERT INTO ledger_entry (account_id, txn_id, kind, amount, held_change, balance_after, held_after, actor)
        VALUES (v_account, p_txn, 'capture', -v_amount, -v_amount, v_balance, v_held, p_actor);
    END
    $$""",
    # -- release: declined, or no credit; the hold goes away --------------------------
    """
    CREATE FUNCTION accounts_release(p_txn text, p_actor text)
    RETURNS void LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
    DECLARE
        v_account text;
        v_amount bigint;
        v_state text;
        v_balance bigint;
        v_held bigint;
    BEGIN
        FOR attempt IN 1..3 LOOP
            UPDATE float_hold SET state = 'released', updated_at = now()
             WHERE txn_id = p_txn AND state = 'held'
            RETURNING account_id, amount INTO v_account, v_amount;
            IF FOUND THEN
                UPDATE account_balance SET held = held - v_amount, updated_at = now()
                 WHERE account_id = v_account
                RETURNING balance, held INTO v_balance, v_held;
                INSERT INTO ledger_entry (account_id, txn_id, kind, amount, held_change, balance_after, held_after, actor)
                VALUES (v_account, p_txn, 'release', 0, -v_amount, v_balance, v_held, p_actor);
                RETURN;
            END IF;
            SELECT state INTO v_state FROM float_hold WHERE txn_id = p_txn;
            IF FOUND THEN
                IF v_state = 'released' THEN
                    RETURN;  -- already released
                END IF;
                RAISE EXCEPTION 'cannot release txn %: its hold is %', p_txn, v_state USING ERRCODE = 'AS003';
            END IF;
            -- Nothing held: leave a tombstone so that a hold still on its way (its
            -- caller gave up waiting for it) is refused instead of stranding float.
            INSERT INTO float_hold (txn_id, account_id, amount, state) VALUES (p_txn, NULL, 0, 'released')
                ON CONFLICT (txn_id) DO NOTHING;
            IF FOUND THEN
                RETURN;
            END IF;
            -- A hold of this txn committed meanwhile: release it (next statement, new snapshot).
        END LOOP;
        RAISE EXCEPTION 'could not release txn %', p_txn USING ERRCODE = 'AS003';
    END
    $$""",
    # -- refund: a reversal gives a captured amount back --------------------------------
    """
    CREATE FUNCTION accounts_refund(p_txn text, p_actor text)
    RETURNS void LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
    DECLARE
        v_account text;
        v_amount bigint;
        v_state text;
        v_balance bigint;
        v_held bigint;
    BEGIN
        UPDATE float_hold SET state = 'refunded', updated_at = now()
         WHERE txn_id = p_txn AND state = 'captured'
        RETURNING account_id, amount INTO v_account, v_amount;
        IF NOT FOUND THEN
            SELECT state INTO v_state FROM float_hold WHERE txn_id = p_txn;
            IF NOT FOUND THEN
                RAISE EXCEPTION 'no hold for txn %', p_txn USING ERRCODE = 'AS004';
            END IF;
            IF v_state = 'refunded' THEN
                RETURN;  -- already refunded
            END IF;
            RAISE EXCEPTION 'cannot refund txn %: never captured (its hold is %)', p_txn, v_state
                USING ERRCODE = 'AS003';
        END IF;
        UPDATE account_balance SET balance = balance + v_amount, updated_at = now()
         WHERE account_id = v_account
        RETURNING balance, held INTO v_balance, v_held;
        INSERT INTO ledger_entry (account_id, txn_id, kind, amount, held_change, balance_after, held_after, actor)
        VALUES (v_account, p_txn, 'refund', v_amount, 0, v_balance, v_held, p_actor);
    END
    $$""",
)

MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1,)

# -- queries used by the ledger ---------------------------------------------------------

HOLD = "SELECT accounts_hold($1, $2, $3, $4)"
CAPTURE = "SELECT accounts_capture($1, $2)"
RELEASE = "SELECT accounts_release($1, $2)"
REFUND = "SELECT accounts_refund($1, $2)"
POST = "SELECT accounts_post($1, $2, $3, $4, $5)"
TRANSFER = "SELECT from_balance, to_balance FROM accounts_transfer($1, $2, $3, $4, $5)"
OPEN = "SELECT accounts_open($1, $2, $3, $4)"
BALANCE = "SELECT balance, held, balance - held + credit_limit FROM account_balance WHERE account_id = $1"
STATEMENT = (
    f"SELECT {', '.join(ENTRY_COLUMNS)} FROM ledger_entry WHERE account_id = $1 ORDER BY id DESC LIMIT $2"
)
# A top-up's movements on any account, in the order written (ledger_entry_txn_idx serves it).
TXN_ENTRIES = f"SELECT {', '.join(ENTRY_COLUMNS)} FROM ledger_entry WHERE txn_id = $1 ORDER BY id"
ACCOUNT_EXISTS = "SELECT EXISTS (SELECT 1 FROM account WHERE account_id = $1)"
# One statement, so one snapshot: the cache, the entries and the open holds agree or
# the account is inconsistent. Also checks every entry's after-values against the
# running sums (walks the account's entries in index order).
VERIFY = """
SELECT b.balance = e.total_amount
   AND b.held = e.total_held
   AND b.held = h.open_held
   AND e.bad_rows = 0
   AND (e.last_id IS NULL OR (b.balance = l.balance_after AND b.held = l.held_after))
  FROM account_balance b
 CROSS JOIN LATERAL (
        SELECT coalesce(sum(amount), 0) AS total_amount,
               coalesce(sum(held_change), 0) AS total_held,
               count(*) FILTER (WHERE running_amount <> balance_after OR running_held <> held_after) AS bad_rows,
               max(id) AS last_id
          FROM (SELECT id, amount, held_change, balance_after, held_after,
                       sum(amount) OVER w AS running_amount, sum(held_change) OVER w AS running_held
                  FROM ledger_entry WHERE account_id = b.account_id
                WINDOW w AS (ORDER BY id)) r
       ) e
 CROSS JOIN LATERAL (
        SELECT coalesce(sum(amount), 0) AS open_held FROM float_hold
         WHERE account_id = b.account_id AND state = 'held'
       ) h
  LEFT JOIN ledger_entry l ON l.id = e.last_id
 WHERE b.account_id = $1
"""
