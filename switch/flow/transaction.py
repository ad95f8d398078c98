"""One transaction on its way through the participants: what is known of it so far.

The engine makes a `Transaction` per request; participants read the request from it
and write what they learn (the normalised MSISDN, the operator, the reference at the
provider, the hold, the provider's answer). Its state and response code are set once,
through `decide`, which checks the move against the declared transitions.
"""

from __future__ import annotations

import time
import uuid
from datetime import date, datetime

from switch.clock import utcnow
from switch.flow.codes import ResponseCode
from switch.flow.messages import Answer, Balance, Request
from switch.flow.states import TxnState, check_transition
from switch.journal import Intake, Outcome, Reversal
from switch.providers.base import OperatorAnswer, Provider, TopUp


class Transaction:
    __slots__ = ("request", "txn_id", "received_at", "business_day", "started", "key", "msisdn",
                 "operator_id", "provider", "topup", "refusal", "journaled", "state", "response_code",
                 "operator_answer", "reversal", "balance", "approval_code", "in_flight", "reserved", "held",
                 "operator_seconds")

    def __init__(self, request: Request, business_day_of) -> None:
        self.request = request
        self.txn_id = uuid.uuid4().hex
        self.received_at: datetime = utcnow()
        self.business_day: date = business_day_of(self.received_at)
        self.started = time.perf_counter()
        self.key: str | None = None                 # the dedupe key, once the request proved well formed
        self.msisdn: str | None = None              # normalised international digits
        self.operator_id: str | None = None         # the operator the number routes to
        self.provider: Provider | None = None
        self.topup: TopUp | None = None             # what goes to the provider, its reference fixed
        # A refusal found before the dedupe key was claimed in the journal: answered once it is, so
        # that a duplicate is answered 94 whatever the original's fate (INTERFACES.md 1.5).
        self.refusal: ResponseCode | None = None
        self.journaled = False                      # an intake that holds the key is (or may be) stored
        self.state: TxnState | None = None
        self.response_code: ResponseCode | None = None
        self.operator_answer: OperatorAnswer | None = None
        self.reversal: Reversal | None = None       # owed to the operator (unknown outcome)
        self.balance: Balance | None = None
        self.approval_code: str | None = None
        self.in_flight = False                      # held in this process's in-flight registry
        self.reserved = False                       # holds its place in the acquirer's limits
        self.held = False                           # holds float on the payer's account
        self.operator_seconds: float | None = None  # the provider's round trip, when it answered

    def decide(self, state: TxnState, code: str) -> None:
        """The transaction's end: its state (checked against the transitions) and the payer's code."""
        response_code = ResponseCode(code)   # a code outside 1.6 is a bug: raised before anything is decided
        self.state = check_transition(self.state, state)
        self.response_code = response_code

    @property
    def latency_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000.0

    # -- journal records ---------------------------------------------------------------
    def intake(self, uses_key: bool) -> Intake:
        request, topup = self.request, self.topup
        return Intake(
            txn_id=self.txn_id, received_at=self.received_at, business_day=self.business_day,
            mti=request.message_type, acquirer_id=request.acquirer_id, tracking_code=request.tracking_code,
            stan=request.trace, transmitted_at=request.transmitted_at, terminal_id=request.terminal_id,
            merchant_id=request.merchant_id, card_masked=request.card_masked,
            msisdn=self.msisdn or request.msisdn, amount=request.amount, currency=request.currency,
            channel=request.sales_channel, uses_key=uses_key,
            routed_operator=self.operator_id if topup is not None else None,
            operator_stan=topup.stan if topup is not None else None,
            operator_sent_at=topup.sent_at if topup is not None else None,
        )

    def outcome(self) -> Outcome:
        answer = self.operator_answer
        return Outcome(
            txn_id=self.txn_id, ended_at=utcnow(), state=self.state, response_code=self.response_code,
            operator_id=self.operator_id, operator_ref=answer.operator_ref if answer else None,
            approval_code=self.approval_code, operator_code=answer.operator_code if answer else None,
            latency_ms=self.latency_ms)

    # -- the payer's answer ---------------------------------------------------------------
    def answer(self) -> Answer:
        if self.response_code == ResponseCode.APPROVED and self.state == TxnState.APPROVED:
            return approval(self.approval_code, self.operator_id,
                            self.operator_answer.operator_ref if self.operator_answer else None)
        approved = self.response_code == ResponseCode.APPROVED
        return Answer(response_code=self.response_code, balance=self.balance if approved else None)


def approval(approval_code: str | None, operator_id: str | None, operator_ref: str | None) -> Answer:
    """An approved top-up's answer (INTERFACES.md 1.4: 38, 44 and 48 OR), first time or replayed."""
    return Answer(response_code=ResponseCode.APPROVED, approval_code=approval_code or "000000",
                  operator_id=operator_id or "", tags={"OR": operator_ref or ""})


def approval_code_of(answer: OperatorAnswer) -> str:
    """The approval code is an6: the operator's code when it fits, else one made from its reference."""
    code = answer.approval_code or ""
    if len(code) == 6:
        return code
    return (code or answer.operator_ref or "000000")[-6:].rjust(6, "0")
