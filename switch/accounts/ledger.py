"""FloatLedger: prepaid float accounts of acquirers and agents, on PostgreSQL through asyncpg.

Owns the accounts, their balances and every movement of money on them. A prepaid
acquirer or agent deposits float; each top-up holds what it will cost before it goes to
the operator, and the hold is captured on approval, released on a decline (or an
unknown outcome that credited nothing), and refunded when an approved top-up is reversed.

Pricing. For a top-up of ``amount`` (minor units, rials for 364) the float pays

    float_debit = amount + fee - commission
    fee         = fee_fixed + floor(amount * fee_percent_bp / 10_000)
    commission  = ceil(amount * commission_bp / 10_000)

Integer arithmetic only. Both roundings go the payer's way (the payer is the account
whose float is debited): the percentage fee rounds down, the commission rounds up, so
the debit is never more than the exact figure and less than 2 minor units under it.
``hold`` takes the float debit, not the face amount: ``ledger.hold(acc, txn,
pricing.float_debit(amount))``.

Guarantees:
- the float never goes below ``-credit_limit``: ``available = balance - held +
  credit_limit`` is never negative. Every operation is one conditional UPDATE of the
  account's row inside one server-side function, and a CHECK constraint backs it;
- the balance is the sum of the account's ``ledger_entry`` rows (append-only, enforced
  by a trigger), cached in ``account_balance`` in the same transaction;
- hold/capture/release/refund are exactly-once per txn_id however many callers,
  connections or processes race, and idempotent: a repeat does nothing.

Each operation is one round trip: a ``SELECT accounts_<op>(...)`` (see schema.py).
A call that raises ``LedgerUnavailable`` may or may not have been committed; every
operation keyed by txn_id is safe to repeat, so repeat it. Releasing a txn whose hold
never committed leaves a tombstone, so a hold of that txn arriving later is refused
instead of stranding float: after a hold that timed out, ``release`` settles it.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from switch.errors import AirswitchError

from . import schema as sql

DEFAULT_SCHEMA = "public"
DEFAULT_POOL_SIZE = 4
DEFAULT_TIMEOUT = 5.0  # seconds; bounds every call: pool acquire + the statement
DEFAULT_CURRENCY = "364"
DEFAULT_ACTOR = "switch"  # actor of the entries the top-up flow makes
DEFAULT_STATEMENT_LIMIT = 100
APPLICATION_NAME = "airswitch-accounts"  # how the ledger shows in pg_stat_activity
# pg_advisory_xact_lock(class, hashtext(schema)) serialises migrations of one schema.
# Same class as the journal's on purpose: both may create the schema they share.
MIGRATION_LOCK_CLASS = 8583
BASIS_POINTS = 10_000
_INT64_MAX = 2**63 - 1

# Server errors that mean "the database is not there right now", by SQLSTATE class:
# connection exception, operator intervention (shutdown), insufficient resources,
# transaction rollback (serialization failure, deadlock).
_UNAVAILABLE_CLASSES = ("08", "57", "53", "40")


class LedgerError(AirswitchError):
    """Base of every ledger error; raised as such when a rule refuses an operation."""


class InsufficientFloat(LedgerError):
    """The account's available float (balance - held + credit_limit) does not cover it."""


class UnknownAccount(LedgerError):
    """No such account (or parent account)."""


class UnknownHold(LedgerError):
    """capture or refund of a txn that never held anything."""


class LedgerUnavailable(LedgerError):
    """Not done, or not known to be done: database down, timeout, ledger not running."""


_ERRORS_BY_SQLSTATE: dict[str, type[LedgerError]] = {
    sql.SQLSTATE_INSUFFICIENT_FLOAT: InsufficientFloat,
    sql.SQLSTATE_UNKNOWN_ACCOUNT: UnknownAccount,
    sql.SQLSTATE_REFUSED: LedgerError,
    sql.SQLSTATE_UNKNOWN_HOLD: UnknownHold,
}


class Pricing(msgspec.Struct, frozen=True):
    """What a top-up through one operator costs the float. See the module docstring."""

    fee_fixed: int = 0  # minor units per top-up
    fee_percent_bp: int = 0  # basis points of the amount (100 = 1 %)
    commission_bp: int = 0  # basis points of the amount, paid back to the payer

    def __post_init__(self) -> None:
        if self.fee_fixed < 0 or self.fee_percent_bp < 0 or self.commission_bp < 0:
            raise ValueError(f"pricing values must be >= 0, got {self!r}")
        if self.commission_bp > BASIS_POINTS:
            raise ValueError(f"commission_bp must be <= {BASIS_POINTS}, got {self.commission_bp}")

    def fee(self, amount: int) -> int:
        return self.fee_fixed + amount * self.fee_percent_bp // BASIS_POINTS  # rounds down

    def commission(self, amount: int) -> int:
        return -(-amount * self.commission_bp // BASIS_POINTS)  # rounds up

    def float_debit(self, amount: int) -> int:
        """What the float pays for a top-up of `amount`: amount + fee - commission."""
        _check_amount(amount, "amount")
        debit = amount + self.fee(amount) - self.commission(amount)
        if debit <= 0:
            raise ValueError(f"{self!r} leaves nothing to debit for an amount of {amount}")
        return debit


class Balance(msgspec.Struct, frozen=True):
    balance: int  # deposits - captured + refunds +- adjustments and transfers
    held: int  # reserved by top-ups in flight
    available: int  # balance - held + credit_limit: what the next hold may take


class Entry(msgspec.Struct, frozen=True):
    """One ledger row. amount: effect on the balance; held_change: effect on held."""

    id: int
    at: datetime
    account_id: str
    txn_id: str | None  # the top-up's txn_id; "transfer:<uuid>" on both rows of a transfer
    kind: str
    amount: int
    held_change: int
    balance_after: int
    held_after: int
    note: str | None
    actor: str


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _check_amount(value: object, name: str, *, signed: bool = False) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int in minor units, got {value!r}")
    if abs(value) > _INT64_MAX:
        raise ValueError(f"{name} out of range: {value}")
    if signed and value == 0:
        raise ValueError(f"{name} must not be 0")
    if not signed and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def _check_text(value: object, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    return value


class FloatLedger:
    """Prepaid float accounts on PostgreSQL. See the module docstring."""

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = DEFAULT_SCHEMA,
        pool_size: int = DEFAULT_POOL_SIZE,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if pool_size < 1:
            raise ValueError("pool_size must be >= 1")
        self._dsn = dsn
        self._schema = schema
        self._pool_size = pool_size
        self._timeout = timeout
        self._pool: asyncpg.Pool | None = None

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, create the schema if missing, apply missing migrations. Idempotent."""
        if self._pool is not None:
            return
        try:
            pool = await asyncpg.create_pool(
                self._dsn,
                # Warm: the hot path never waits for a connect.
                min_size=self._pool_size,
                max_size=self._pool_size,
                timeout=self._timeout,
                server_settings={
                    "search_path": _quote_ident(self._schema),
                    "application_name": APPLICATION_NAME,
                },
            )
        except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise LedgerUnavailable(f"cannot connect to the accounts database: {exc!r}") from exc
        try:
            async with pool.acquire() as conn:
                await self._migrate(conn)
        except BaseException:
            await pool.close()
            raise
        self._pool = pool

    async def _migrate(self, conn: asyncpg.Connection) -> None:
        schema = _quote_ident(self._schema)
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", MIGRATION_LOCK_CLASS, self._schema)
            # Check first: CREATE SCHEMA needs the CREATE privilege even with IF NOT EXISTS.
            if not await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", self._schema):
                await conn.execute(f"CREATE SCHEMA {schema}")
            # The functions bind their tables to this (SET search_path FROM CURRENT).
            await conn.execute(f"SET LOCAL search_path TO {schema}")
            await conn.execute(sql.SCHEMA_VERSION_DDL)
            current = await conn.fetchval(f"SELECT coalesce(max(version), 0) FROM {sql.SCHEMA_VERSION_TABLE}")
            if current > len(sql.MIGRATIONS):
                raise LedgerError(
                    f"accounts schema {self._schema!r} is at version {current}, newer than this"
                    f" code knows ({len(sql.MIGRATIONS)}); refusing to run against it"
                )
            for version, statements in enumerate(sql.MIGRATIONS[current:], start=current + 1):
                for statement in statements:
                    await conn.execute(statement)
                await conn.execute(f"INSERT INTO {sql.SCHEMA_VERSION_TABLE} (version) VALUES ($1)", version)

    async def close(self) -> None:
        """Close the pool (waits up to the timeout for calls in flight). Idempotent."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), self._timeout)
        except asyncio.TimeoutError:
            pool.terminate()

    async def __aenter__(self) -> FloatLedger:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- accounts -----------------------------------------------------------------------

    async def open_account(
        self, account_id: str, *, parent: str | None = None, currency: str = DEFAULT_CURRENCY, credit_limit: int = 0
    ) -> None:
        """Open an account with a zero balance. Opening it again with the same parent,
        currency and credit limit does nothing; with different ones raises LedgerError.
        A sub-agent's parent must exist and have the same currency (else UnknownAccount
        / LedgerError)."""
        _check_text(account_id, "account_id")
        if parent is not None:
            _check_text(parent, "parent")
        if not (isinstance(currency, str) and len(currency) == 3 and currency.isdigit()):
            raise ValueError(f"currency must be an ISO 4217 numeric code, got {currency!r}")
        if not isinstance(credit_limit, int) or isinstance(credit_limit, bool) or not 0 <= credit_limit <= _INT64_MAX:
            raise ValueError(f"credit_limit must be an int >= 0 in minor units, got {credit_limit!r}")
        await self._call("fetchval", sql.OPEN, account_id, parent, currency, credit_limit)

    async def deposit(self, account_id: str, amount: int, *, actor: str, note: str | None = None) -> int:
        """Add float; returns the new balance."""
        _check_amount(amount, "amount")
        return await self._call("fetchval", sql.POST, account_id, "deposit", amount, _check_text(actor, "actor"), note)

    async def adjust(self, account_id: str, amount_signed: int, *, actor: str, note: str) -> int:
        """A signed correction with a reason; returns the new balance. InsufficientFloat
        when a debit would take the account below its credit limit."""
        _check_amount(amount_signed, "amount_signed", signed=True)
        return await self._call(
            "fetchval", sql.POST, account_id, "adjustment", amount_signed,
            _check_text(actor, "actor"), _check_text(note, "note"),
        )

    async def transfer(self, from_id: str, to_id: str, amount: int, *, actor: str, note: str | None = None) -> tuple[int, int]:
        """Move float between an agent and its sub-agent (either direction), both rows in
        one transaction; returns (from balance, to balance). LedgerError between accounts
        that are not parent and child; InsufficientFloat when `from_id` cannot cover it."""
        _check_amount(amount, "amount")
        row = await self._call("fetchrow", sql.TRANSFER, from_id, to_id, amount, _check_text(actor, "actor"), note)
        return row[0], row[1]

    # -- the top-up hot path ----------------------------------------------------------------

    async def hold(self, account_id: str, txn_id: str, amount: int, *, actor: str = DEFAULT_ACTOR) -> int:
        """Reserve `amount` (the float debit, see Pricing) for top-up `txn_id`; returns the
        available float after it. InsufficientFloat (-> 39 = 51) when available < amount.
        A repeat for the same txn_id, account and amount does nothing and returns the
        available float now; a different account or amount raises LedgerError."""
        _check_amount(amount, "amount")
        return await self._call("fetchval", sql.HOLD, account_id, _check_text(txn_id, "txn_id"), amount, actor)

    async def capture(self, txn_id: str, *, actor: str = DEFAULT_ACTOR) -> None:
        """Approved: the hold becomes a debit. No-op if already captured (or refunded);
        LedgerError if it was released; UnknownHold if there was no hold."""
        await self._call("fetchval", sql.CAPTURE, _check_text(txn_id, "txn_id"), actor)

    async def release(self, txn_id: str, *, actor: str = DEFAULT_ACTOR) -> None:
        """Declined, or unknown with no credit: the hold goes away. No-op if already
        released; LedgerError if captured. A txn with no hold is marked released, so a
        hold of it that arrives later is refused."""
        await self._call("fetchval", sql.RELEASE, _check_text(txn_id, "txn_id"), actor)

    async def refund(self, txn_id: str, *, actor: str = DEFAULT_ACTOR) -> None:
        """Reversed: a captured amount goes back to the float. No-op if already refunded;
        LedgerError if never captured; UnknownHold if there was no hold."""
        await self._call("fetchval", sql.REFUND, _check_text(txn_id, "txn_id"), actor)

    # -- reads ----------------------------------------------------------------------------

    async def balance(self, account_id: str) -> Balance:
        """From the cache row (one index lookup)."""
        row = await self._call("fetchrow", sql.BALANCE, account_id)
        if row is None:
            raise UnknownAccount(f"unknown account {account_id}")
        return Balance(row[0], row[1], row[2])

    async def statement(self, account_id: str, limit: int = DEFAULT_STATEMENT_LIMIT) -> list[Entry]:
        """The latest `limit` entries, newest first."""
        rows = await self._call("fetch", sql.STATEMENT, account_id, limit)
        if not rows and not await self._call("fetchval", sql.ACCOUNT_EXISTS, account_id):
            raise UnknownAccount(f"unknown account {account_id}")
        return [Entry(*row) for row in rows]

    async def movements(self, txn_id: str) -> list[Entry]:
        """Every entry a top-up made (hold, capture, release, refund), oldest first."""
        return [Entry(*row) for row in await self._call("fetch", sql.TXN_ENTRIES, _check_text(txn_id, "txn_id"))]

    async def verify(self, account_id: str) -> bool:
        """True when the cached balance and held equal the sums of the account's entries,
        held equals its open holds, and every entry's after-values equal the running
        sums. Reads all of the account's entries: an audit, not for the hot path."""
        ok = await self._call("fetchval", sql.VERIFY, account_id)
        if ok is None:
            raise UnknownAccount(f"unknown account {account_id}")
        return ok

    # -- plumbing ---------------------------------------------------------------------------

    async def _call(self, method: str, query: str, *args: Any) -> Any:
        pool = self._pool
        if pool is None:
            raise LedgerUnavailable("ledger is not running")
        try:
            async with asyncio.timeout(self._timeout):
                async with pool.acquire() as conn:
                    return await getattr(conn, method)(query, *args)
        except asyncpg.PostgresError as exc:
            raise _translate(exc) from exc
        except (OSError, TimeoutError, asyncpg.InterfaceError) as exc:
            raise LedgerUnavailable(f"accounts database call failed: {exc!r}") from exc


def _translate(exc: asyncpg.PostgresError) -> LedgerError:
    sqlstate = getattr(exc, "sqlstate", None) or ""
    error_class = _ERRORS_BY_SQLSTATE.get(sqlstate)
    if error_class is not None:
        return error_class(getattr(exc, "message", str(exc)))
    if sqlstate[:2] in _UNAVAILABLE_CLASSES:
        return LedgerUnavailable(f"accounts database unavailable: {exc!r}")
    # A constraint or value error the functions did not anticipate: a bug or bad input,
    # refused by the database all the same.
    return LedgerError(f"accounts database refused the operation: {exc!r}")
