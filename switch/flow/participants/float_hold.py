"""Float hold: a prepaid payer's float pays for the top-up (INTERFACES.md 51, 54).

prepare: hold amount + fee - commission on the payer's float account (51 when short, 96
when the ledger cannot be reached). end: capture the hold on approval, keep it while the
outcome is unknown (the reversal's settlement returns it, `refund`), release it otherwise.
A failure in end is logged for reconciliation: the outcome is already the operator's.
"""

from __future__ import annotations

import logging

from switch.accounts import FloatLedger, InsufficientFloat, LedgerError, LedgerUnavailable, Pricing, UnknownHold
from switch.app.config import PricingConfig
from switch.flow.codes import ResponseCode
from switch.flow.states import TxnState
from switch.flow.transaction import Transaction

log = logging.getLogger("airswitch.flow")


class FloatHold:
    def __init__(self, ledger: FloatLedger | None, pricing: dict[str, PricingConfig]) -> None:
        self.ledger = ledger
        self.pricing = pricing

    def debit(self, operator_id: str | None, amount: int) -> int:
        pricing = self.pricing.get(operator_id)
        if pricing is None:
            return amount
        return Pricing(pricing.fee_fixed, pricing.fee_percent_bp, pricing.commission_bp).float_debit(amount)

    async def prepare(self, txn: Transaction) -> ResponseCode | None:
        account = txn.request.payer.float_account
        if account is None:
            return None
        debit = self.debit(txn.operator_id, txn.request.amount)
        try:
            await self.ledger.hold(account, txn.txn_id, debit)
        except InsufficientFloat:
            log.info("txn %s: float %s cannot cover %d: 51", txn.txn_id, account, debit)
            return ResponseCode.INSUFFICIENT_FLOAT
        except LedgerError as exc:
            log.error("txn %s: float %s unavailable (%s): 96", txn.txn_id, account, exc,
                      extra={"repeat": "top-ups answered 96, float ledger unavailable"})
            try:
                await self.ledger.release(txn.txn_id)   # the hold may have committed after our wait ended
            except LedgerError as release_error:
                log.critical("txn %s: possible hold on %s not released (%s): reconcile", txn.txn_id, account,
                             release_error)
            return ResponseCode.MALFUNCTION
        txn.held = True
        return None

    async def end(self, txn: Transaction) -> None:
        if not txn.held or txn.state in (None, TxnState.UNKNOWN):
            return   # unknown: the float stays held until the reversal settles
        approved = txn.state == TxnState.APPROVED
        try:
            if approved:
                await self.ledger.capture(txn.txn_id)
            else:
                await self.ledger.release(txn.txn_id)
        except LedgerError as exc:
            log.critical("txn %s: float %s not %s (%s): reconcile the float by hand", txn.txn_id,
                         txn.request.payer.float_account, "captured" if approved else "released", exc)

    async def refund(self, txn_id: str) -> bool:
        """A reversal settled at the operator: give the payer back what the top-up took or held.
        False when the ledger could not be reached: store-and-forward tries again."""
        if self.ledger is None:
            return True
        try:
            await self.ledger.refund(txn_id)            # it was captured (an approved top-up reversed)
        except UnknownHold:
            return True                                 # not paid from a float
        except LedgerUnavailable as exc:
            log.error("txn %s: float not returned yet (%s)", txn_id, exc)
            return False
        except LedgerError:
            try:
                await self.ledger.release(txn_id)       # it was only held (an unknown outcome)
            except LedgerError as exc:
                log.error("txn %s: float not returned yet (%s)", txn_id, exc)
                return False
        return True
