"""The switch's own transaction model, the same whatever the acquirer or operator speaks."""

from __future__ import annotations

import msgspec


class TopUp(msgspec.Struct, frozen=True):
    """What the switch asks an operator to do: credit `amount` to `msisdn`."""
    txn_id: str
    acquirer_id: str
    tracking_code: str   # the acquirer's field 37, passed to the operator unchanged
    msisdn: str          # international digits
    amount: int
    currency: str


class OperatorAnswer(msgspec.Struct, frozen=True):
    """An operator's final word on a top-up, already mapped for the acquirer."""
    response_code: str            # field 39 for the acquirer (INTERFACES.md table 2.4)
    operator_code: str            # what the operator said, in its own dialect
    approval_code: str | None = None
    operator_ref: str | None = None
