"""The switch's own transaction model, the same whatever the acquirer or operator speaks."""

from __future__ import annotations

from datetime import datetime

import msgspec


class TopUp(msgspec.Struct, frozen=True):
    """What the switch asks an operator to do: credit `amount` to `msisdn`."""
    txn_id: str
    acquirer_id: str
    tracking_code: str   # the acquirer's field 37, passed to the operator unchanged
    msisdn: str          # international digits
    amount: int
    currency: str
    # The switch's own reference at the operator, fixed (and journaled) before the request leaves,
    # so that a reversal can name the original even after a crash: STAN and send time (ISO
    # dialects); opcjson uses txn_id.
    stan: str
    sent_at: datetime


class OperatorAnswer(msgspec.Struct, frozen=True):
    """An operator's final word on a top-up, already mapped for the acquirer."""
    response_code: str            # field 39 for the acquirer (INTERFACES.md table 2.4)
    operator_code: str            # what the operator said, in its own dialect
    approval_code: str | None = None
    operator_ref: str | None = None


class OperatorReversal(msgspec.Struct, frozen=True):
    """What the switch asks an operator to undo: the original top-up as it was sent."""
    txn_id: str
    tracking_code: str
    msisdn: str
    amount: int
    currency: str
    original_stan: str
    original_sent_at: datetime
    attempt: int          # 0 for the first try (0420/1420), then repeats (0421/1421)


class ReversalAnswer(msgspec.Struct, frozen=True):
    settled: bool         # the operator reversed it, or says there is nothing to reverse
    operator_code: str
