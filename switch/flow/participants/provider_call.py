"""Provider call: the top-up goes to the provider that serves the number, and its answer
decides the transaction.

`ProviderReference` fixes the switch's reference at the provider before the intake is
journaled, so that after a crash the request can be named in a reversal. `ProviderCall`
sends it and decides:
- an answer: approved (00) or declined with the provider's code mapped (INTERFACES.md 2.4);
- nothing sent (no live link, no room, or the operator is routed to but not configured):
  declined 91;
- sent and no answer: unknown, 91, and the reversal is stored with the outcome, before the
  payer hears 91; store-and-forward repeats it until the operator answers.
"""

from __future__ import annotations

import logging
import time

from switch.clock import utcnow
from switch.flow.codes import ResponseCode
from switch.flow.states import TxnState
from switch.flow.transaction import Transaction, approval_code_of
from switch.journal import Reversal
from switch.providers.base import NoAnswer, NotSent, TopUp

log = logging.getLogger("airswitch.flow")


class ProviderReference:
    async def prepare(self, txn: Transaction) -> None:
        if txn.refusal is None and txn.provider is not None:
            request = txn.request
            txn.topup = TopUp(txn_id=txn.txn_id, acquirer_id=request.acquirer_id,
                              tracking_code=request.tracking_code, msisdn=txn.msisdn, amount=request.amount,
                              currency=request.currency, stan=txn.provider.next_reference(), sent_at=utcnow())
        return None



class ProviderCall:
    async def prepare(self, txn: Transaction) -> None:
        try:
            if txn.provider is None:
                raise NotSent(f"operator {txn.operator_id} is routed to but not configured")
            sent = time.perf_counter()
            answer = await txn.provider.top_up(txn.topup)
            txn.operator_seconds = time.perf_counter() - sent
        except NotSent as exc:
            log.warning("txn %s: %s: 91", txn.txn_id, exc,
                        extra={"repeat": f"{txn.operator_id}: top-ups answered 91, nothing sent"})
            txn.decide(TxnState.DECLINED, ResponseCode.UNAVAILABLE)
            return None
        except NoAnswer as exc:
            # Unknown outcome: the operator may have credited.
            log.warning("txn %s: %s: 91, outcome unknown, reversal queued", txn.txn_id, exc,
                        extra={"repeat": f"{txn.operator_id}: top-ups answered 91, no answer, reversal queued"})
            txn.reversal = Reversal(txn_id=txn.txn_id, operator_id=txn.operator_id, reason="unknown_outcome",
                                    created_at=utcnow())
            txn.decide(TxnState.UNKNOWN, ResponseCode.UNAVAILABLE)
            return None
        txn.operator_answer = answer
        if answer.response_code == ResponseCode.APPROVED:
            txn.approval_code = approval_code_of(answer)
            txn.decide(TxnState.APPROVED, ResponseCode.APPROVED)
        else:
            txn.decide(TxnState.DECLINED, answer.response_code)
        return None
