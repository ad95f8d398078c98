"""Dialect opcjson (INTERFACES.md 2.3): JSON lines. A top-up's ref is the switch's
transaction id and a reversal's is that id with "-R"; no sign-on when the switch
dials, a login (checked against the operator's secret) when the operator dials in;
ping/pong keep-alive.
"""

from __future__ import annotations

import hmac
import logging

from switch.errors import LocalProtocolError
from switch.providers.adapters.codes import CodeTable
from switch.providers.base import OperatorAnswer, OperatorReversal, ReversalAnswer, TopUp
from switch.wire import JsonLinesDialect, load_dialect

log = logging.getLogger("airswitch.operator")

ECHO_REFERENCE = "ping"  # ping/pong carry no ref: one echo at a time per link


class OpcJsonAdapter:
    signs_on = False  # a dialled link carries traffic at once; `accept` links log in (handshake)

    def __init__(self, operator_id: str, institution_id: str, terminal_id: str, secret: str | None = None):
        self.operator_id = operator_id
        self.secret = secret
        self.dialect: JsonLinesDialect = load_dialect("opcjson")
        self.codes = CodeTable("opcjson", self.dialect.rules)

    @staticmethod
    def reference(counter: int) -> str:
        return ECHO_REFERENCE

    @staticmethod
    def reference_of(topup: TopUp) -> str:
        # A top-up's ref is its transaction id: unique across links, processes and restarts.
        return topup.txn_id

    @staticmethod
    def reversal_reference(reversal: OperatorReversal, counter: int) -> str:
        # The same ref on every repeat: the operator can tell a repeat from a new reversal.
        return f"{reversal.txn_id}-R"

    @staticmethod
    def answer_key(message: dict) -> str | None:
        if message["type"] == "pong":
            return ECHO_REFERENCE
        ref = message.get("ref")
        return ref if isinstance(ref, str) else None

    @staticmethod
    def sign_on(reference: str) -> dict:
        raise LocalProtocolError("opcjson has no sign-on (signs_on is False)")

    @staticmethod
    def sign_off(reference: str) -> dict:
        raise LocalProtocolError("opcjson has no sign-off (signs_on is False)")

    @staticmethod
    def echo(reference: str) -> dict:
        return {"type": "ping"}

    @staticmethod
    def network_ok(answer: dict) -> bool:
        return answer.get("type") == "pong"

    @staticmethod
    def top_up(topup: TopUp) -> dict:
        return {"type": "recharge", "ref": topup.txn_id, "msisdn": topup.msisdn, "amount": topup.amount,
                "currency": topup.currency, "tracking": topup.tracking_code}

    @staticmethod
    def reversal(reference: str, reversal: OperatorReversal) -> dict:
        return {"type": "reverse", "ref": reference, "original_ref": reversal.txn_id}

    def reversal_answer(self, answer: dict) -> ReversalAnswer:
        return self.codes.reversal_answer(str(answer.get("status")), answer.get("type") == "reverse_result")

    def is_nothing_to_reverse(self, operator_code: str) -> bool:
        return self.codes.is_nothing_to_reverse(operator_code)

    def parse_answer(self, answer: dict, topup: TopUp) -> OperatorAnswer:
        status, reason = answer.get("status"), answer.get("reason")
        code = status if status == "OK" else f"{status} {reason}"
        if answer.get("type") != "recharge_result":
            log.error("opcjson answer of type %r for a recharge: treated as declined", answer.get("type"))
            code = f"{answer.get('type')}"
        reference = answer.get("op_txn_id")
        return OperatorAnswer(response_code=self.codes.map(code, topup, self.operator_id), operator_code=code,
                              operator_ref=str(reference) if reference is not None else None)

    def handshake(self, message: dict) -> dict | None:
        """`accept` mode: the operator's first line must be its login, with the configured secret."""
        if (message.get("type") == "login" and message.get("operator") == self.operator_id
                and isinstance(message.get("secret"), str) and self.secret is not None
                and hmac.compare_digest(message["secret"].encode(), self.secret.encode())):
            return {"type": "login_ok"}
        return None

    @staticmethod
    def operator_request(message: dict) -> dict | None:
        """Answer what the operator originates (ping); None when the message is not a request."""
        if message["type"] == "ping":
            return {"type": "pong"}
        return None
