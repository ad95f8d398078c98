"""Balance: a prepaid payer's float balance (bank87 0200 with 3 = 310000, answered in 54).
Recorded like a top-up (it uses its tracking code), with state `inquiry`; no money moves."""

from __future__ import annotations

import logging

from switch.accounts import FloatLedger, LedgerError
from switch.flow.codes import ResponseCode
from switch.flow.messages import Balance
from switch.flow.states import TxnState
from switch.flow.transaction import Transaction

log = logging.getLogger("airswitch.flow")


class BalanceLookup:
    def __init__(self, ledger: FloatLedger | None) -> None:
        self.ledger = ledger

    async def prepare(self, txn: Transaction) -> ResponseCode | None:
        account = txn.request.payer.float_account
        try:
            balance = await self.ledger.balance(account)
        except LedgerError as exc:
            log.error("balance inquiry of %s failed: %s: 96", account, exc)
            return ResponseCode.MALFUNCTION
        txn.balance = Balance(ledger=balance.balance, available=balance.available)
        txn.decide(TxnState.INQUIRY, ResponseCode.APPROVED)
        return None
