"""Prepaid float accounts of acquirers and agents: a PostgreSQL ledger.

Owns who has how much float, and every movement of it. The top-up flow uses four calls
around the operator request, each one round trip and exactly-once per txn_id::

    debit = pricing.float_debit(amount)            # amount + fee - commission
    try:
        await ledger.hold(account_id, txn_id, debit)
    except InsufficientFloat:
        ...                                        # answer 51, nothing held
    ...                                            # send to the operator, await
    await ledger.capture(txn_id)                   # approved (00)
    await ledger.release(txn_id)                   # declined, or unknown and nothing credited
    await ledger.refund(txn_id)                    # an approved top-up was reversed

``LedgerUnavailable`` means not done or not known to be done (answer 96); the calls are
safe to repeat. The schema and the functions behind the calls are in ``schema``.
"""

from __future__ import annotations

from .ledger import (
    Balance,
    Entry,
    FloatLedger,
    InsufficientFloat,
    LedgerError,
    LedgerUnavailable,
    Pricing,
    UnknownAccount,
    UnknownHold,
)

__all__ = [
    "Balance",
    "Entry",
    "FloatLedger",
    "InsufficientFloat",
    "LedgerError",
    "LedgerUnavailable",
    "Pricing",
    "UnknownAccount",
    "UnknownHold",
]
