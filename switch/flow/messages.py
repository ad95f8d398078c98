"""What a channel hands the transaction core, and what it gets back, in domain words.

A channel (bank87, pos87 today; HTTP, SMS and USSD next) reads its bytes into a `Request`,
names the `Payer` it authenticated, and turns the `Answer` back into its own bytes. No
channel holds a business rule, and nothing past the channel speaks field numbers.
"""

from __future__ import annotations

from enum import StrEnum

import msgspec

from switch.app.config import AcquirerConfig, TerminalConfig
from switch.flow.codes import ResponseCode


class Kind(StrEnum):
    TOP_UP = "top_up"        # credit amount to msisdn
    REPEAT = "repeat"        # a top-up sent again because its answer was not received
    BALANCE = "balance"      # the payer's float balance
    INQUIRY = "inquiry"      # which operator serves msisdn and what amounts it takes
    REVERSAL = "reversal"    # undo an approved top-up (request, advice or its repeat)


class PayerKind(StrEnum):
    ACQUIRER = "acquirer"    # a bank or PSP, host to host
    TERMINAL = "terminal"    # a registered POS terminal of an acquirer (its agent's float, if any)
    AGENT = "agent"          # an agent's own float (the SMS and USSD channels, next)


class Payer(msgspec.Struct, frozen=True):
    """Who pays, as the channel authenticated it."""

    kind: PayerKind
    acquirer: AcquirerConfig
    terminal: TerminalConfig | None = None

    @property
    def float_account(self) -> str | None:
        """The float a top-up is paid from: the terminal's agent's, else a prepaid acquirer's, else none."""
        if self.terminal is not None and self.terminal.account:
            return self.terminal.account
        if self.acquirer.prepaid:
            return self.acquirer.account or self.acquirer.institution_id
        return None


class Original(msgspec.Struct, frozen=True):
    """What a reversal says of the top-up it undoes (bank87 field 90)."""

    kind: str              # the original's message type as the acquirer sent it ("0200")
    trace: str             # its STAN
    transmitted_at: str    # its field 7
    acquirer_id: str


class Request(msgspec.Struct, frozen=True, kw_only=True):
    kind: Kind
    channel: str                          # the listener it came in on: "bank87", "pos87"
    payer: Payer
    acquirer_id: str = ""                 # the acquirer the message claims (bank87 32); checked against payer
    tracking_code: str = ""               # the payer's payment tracking code (37)
    msisdn: str | None = None             # as the payer wrote it; the core normalises it
    amount: int | None = None             # minor units
    currency: str | None = None           # ISO 4217 numeric
    product: str | None = None            # product code (48 PC)
    sales_channel: str | None = None      # where the payer's customer was (48 CH: POS, ATM, WEB...)
    message_type: str = ""                # the channel's own message type, journaled as sent ("0200")
    trace: str = ""                       # the payer's own message reference (STAN)
    transmitted_at: str | None = None     # the payer's transmission time (field 7)
    terminal_id: str | None = None
    merchant_id: str | None = None
    card_masked: str | None = None        # first 6 and last 4 only
    original: Original | None = None      # reversals
    advice: bool = False                  # a reversal the payer will not wait for (0420/0421): never refused
    problem: str | None = None            # the channel found a mandatory field missing or malformed (30)
    arrived: float = 0.0                  # time.monotonic() when its bytes reached the channel (0: unknown)


class Balance(msgspec.Struct, frozen=True):
    ledger: int
    available: int
    currency: str = "364"


class Answer(msgspec.Struct, frozen=True, kw_only=True):
    response_code: ResponseCode
    approval_code: str | None = None      # approvals only
    operator_id: str | None = None        # the operator that served (or would serve) the number
    operator_ref: str | None = None       # the operator's transaction reference
    balance: Balance | None = None        # balance inquiries
    tags: dict[str, str] = {}             # further private tags (inquiry: OP, AM)

    @property
    def approved(self) -> bool:
        return self.response_code == ResponseCode.APPROVED
