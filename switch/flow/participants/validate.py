"""Validate: the request is well formed and the payer is who the message says.

Before the dedupe key is used: a request refused here does not use its tracking code
(INTERFACES.md 1.5), so the payer may send it again corrected.
"""

from __future__ import annotations

import logging

from switch.flow.codes import ResponseCode
from switch.flow.messages import Kind
from switch.flow.participants.dedupe import dedupe_key
from switch.flow.transaction import Transaction

log = logging.getLogger("airswitch.flow")


class Validate:
    async def prepare(self, txn: Transaction) -> ResponseCode | None:
        request = txn.request
        if request.problem:
            log.info("txn %s from %s: format error (%s): 30", txn.txn_id, request.payer.acquirer.name,
                     request.problem)
            return ResponseCode.FORMAT_ERROR
        acquirer = request.payer.acquirer
        if request.acquirer_id != acquirer.institution_id:
            log.warning("txn %s: acquirer %s is not %s's (%s): 57", txn.txn_id, request.acquirer_id,
                        acquirer.name, acquirer.institution_id,
                        extra={"repeat": f"{acquirer.name}: requests for another acquirer's id answered 57"})
            return ResponseCode.NOT_PERMITTED
        if request.kind == Kind.BALANCE and request.payer.float_account is None:
            return ResponseCode.NOT_PERMITTED
        txn.key = dedupe_key(request.acquirer_id, request.tracking_code, txn.business_day)
        return None
