"""What credits a subscriber: the provider contract and the messages that cross it.

A provider is whatever the transaction core sends a top-up to: today an operator's pool
of persistent links (`switch.providers.link.OperatorPool`), next an international
provider over HTTP. The core knows providers only through `Provider`; an operator
dialect's wire format lives behind `switch.providers.adapters.OperatorAdapter`, one
module a dialect under `adapters/`, which the core never sees.

Outcomes of `top_up`, and what the core does with each:
- an `OperatorAnswer`: final (INTERFACES.md 1.5), approved or declined;
- `NotSent`: nothing left the switch (no live link, no room): answer 91, release what was held;
- `NoAnswer`: it left and no answer came: the outcome is unknown, a reversal is owed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

import msgspec

from switch.errors import AirswitchError


class TopUp(msgspec.Struct, frozen=True):
    """What the switch asks a provider to do: credit `amount` to `msisdn`."""
    txn_id: str
    acquirer_id: str
    tracking_code: str   # the payer's tracking code, passed to the operator unchanged
    msisdn: str          # international digits
    amount: int
    currency: str
    # The switch's own reference at the provider, fixed (and journaled) before the request leaves,
    # so that a reversal can name the original even after a crash: STAN and send time (ISO
    # dialects); opcjson uses txn_id.
    stan: str
    sent_at: datetime


class OperatorAnswer(msgspec.Struct, frozen=True):
    """A provider's final word on a top-up, already mapped for the acquirer."""
    response_code: str            # the code of INTERFACES.md 1.6 for the acquirer (table 2.4)
    operator_code: str            # what the operator said, in its own dialect
    approval_code: str | None = None
    operator_ref: str | None = None


class OperatorReversal(msgspec.Struct, frozen=True):
    """What the switch asks a provider to undo: the original top-up as it was sent."""
    txn_id: str
    tracking_code: str
    msisdn: str
    amount: int
    currency: str
    original_stan: str
    original_sent_at: datetime
    attempt: int          # 0 for the first try (0420/1420), then repeats (0421/1421)


class ReversalAnswer(msgspec.Struct, frozen=True):
    """A provider's word on a reversal (or its repeat)."""
    settled: bool         # the operator reversed it, or says there is nothing to reverse
    operator_code: str
    nothing_to_reverse: bool = False   # settled because the operator never credited it (25 / 480 / NOT_FOUND)


class ProviderError(AirswitchError):
    """Base of what a provider raises about one request."""


class NotSent(ProviderError):
    """Nothing left the switch (no live link with room, or no free reference on it): answer 91 at once."""


class NoAnswer(ProviderError):
    """The request left but no answer came back (timeout or link lost): outcome unknown."""


class Provider(Protocol):
    """One party that credits subscribers: an operator's link pool, an HTTP provider."""

    id: str

    def next_reference(self) -> str:
        """The switch's reference for the next top-up here, fixed and journaled before it is sent."""

    @property
    def is_up(self) -> bool:
        """It can take a request now."""

    async def top_up(self, topup: TopUp) -> OperatorAnswer:
        """Send one top-up and wait for its final answer; NotSent or NoAnswer otherwise."""

    async def reverse(self, reversal: OperatorReversal) -> ReversalAnswer:
        """Send one reversal (or its repeat) and read the answer; NotSent or NoAnswer otherwise."""

    def is_nothing_to_reverse(self, operator_code: str) -> bool:
        """The provider's reversal answer `operator_code` said it had nothing to reverse."""
