"""Route: the subscriber's number, normalised, and the operator that serves it.

14 for a number that does not normalise, 92 when no operator serves it, 13 for an
amount or currency that operator does not take: each held until the dedupe key is
claimed (see Transaction.refusal).
"""

from __future__ import annotations

import logging

from routing import InvalidMsisdn, Router, normalise_msisdn
from switch.flow.codes import ResponseCode
from switch.flow.transaction import Transaction
from switch.providers.base import Provider

log = logging.getLogger("airswitch.flow")


class Route:
    def __init__(self, router: Router, providers: dict[str, Provider]) -> None:
        self.router = router
        self.providers = providers

    async def prepare(self, txn: Transaction) -> None:
        request = txn.request
        try:
            txn.msisdn = normalise_msisdn(request.msisdn, request.payer.acquirer.country)
        except InvalidMsisdn as exc:
            log.info("txn %s: MSISDN %r: %s: 14", txn.txn_id, request.msisdn, exc)
            txn.refusal = ResponseCode.INVALID_MSISDN
            return None
        route = self.router.route(txn.msisdn)
        if route is None:
            txn.refusal = ResponseCode.NO_ROUTE
            return None
        txn.operator_id = route.operator
        txn.provider = self.providers.get(route.operator)
        if not self.router.check_amount(route.operator, request.amount, request.currency):
            txn.refusal = ResponseCode.INVALID_AMOUNT
        return None
