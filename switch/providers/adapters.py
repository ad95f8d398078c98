"""What each operator dialect puts on the wire, and how its answers read for the acquirer.

An adapter builds the dialect's messages from the switch's own model, names the
reference an answer is matched by, answers what the operator itself may send
(echo, sign-on in `accept` mode, login), and maps the operator's codes to field
39 with the dialect's code table (data in `codecs/`, INTERFACES.md table 2.4).
It holds no connection and no state: links own the I/O.
"""

from __future__ import annotations

import hmac
import logging

from switch.clock import local_time_fields, transmission_time, utcnow
from switch.providers.base import OperatorAnswer, OperatorReversal, ReversalAnswer, TopUp
from switch.wire import load_dialect

log = logging.getLogger("airswitch.operator")

ECHO_REFERENCE = "ping"  # opcjson's ping/pong carry no ref: one echo at a time per link


class CodeTable:
    """An operator's answer code -> field 39 for the acquirer, from the dialect's rules."""

    def __init__(self, rules: dict):
        self._codes: dict[str, str] = rules["answer_codes"]
        self._other: str = rules["other_answer"]
        self._alerts = frozenset(rules["alert_codes"])

    def map(self, operator_code: str, topup: TopUp, operator_id: str) -> str:
        if operator_code in self._alerts:
            log.critical("ALERT operator %s answered duplicate (%s) for tracking code %s: the switch never "
                         "sends a reference twice", operator_id, operator_code, topup.tracking_code)
        return self._codes.get(operator_code, self._other)


class IsoAdapter:
    """Shared by the ISO 8583 dialects: references are STANs (field 11)."""

    dialect_name = ""

    def __init__(self, operator_id: str, institution_id: str, terminal_id: str, secret: str | None = None):
        self.operator_id = operator_id
        self.institution_id = institution_id
        self.terminal_id = terminal_id
        self.dialect = load_dialect(self.dialect_name)
        self.codes = CodeTable(self.dialect.rules)

    @staticmethod
    def reference(counter: int) -> str:
        """A network message's or a reversal's own reference: the next STAN."""
        return f"{counter % 1_000_000 or 1:06d}"

    @staticmethod
    def reference_of(topup: TopUp) -> str:
        return topup.stan

    @staticmethod
    def answer_key(message: dict) -> str | None:
        return message.get("11")

    def _original_institution(self) -> str:
        return self.institution_id.zfill(11)

    def _mismatch(self, answer: dict, expected_mti: str, topup: TopUp) -> bool:
        if answer.get("t") != expected_mti or answer.get("37") != topup.tracking_code:
            log.error("%s answer does not fit its request (MTI %s, 37 %r for %r): treated as declined",
                      self.dialect_name, answer.get("t"), answer.get("37"), topup.tracking_code)
            return True
        return False


class Opa87Adapter(IsoAdapter):
    """opa87 (INTERFACES.md 2.1): ISO 8583:1987 all ASCII; 0800/0810 network, 0200/0210 top-up."""

    dialect_name = "opa87"
    SIGN_ON, SIGN_OFF, ECHO = "001", "002", "301"

    def _network(self, reference: str, code: str) -> dict:
        return {"t": "0800", "7": transmission_time(utcnow()), "11": reference, "41": self.terminal_id,
                "70": code}

    def sign_on(self, reference: str) -> dict:
        return self._network(reference, self.SIGN_ON)

    def sign_off(self, reference: str) -> dict:
        return self._network(reference, self.SIGN_OFF)

    def echo(self, reference: str) -> dict:
        return self._network(reference, self.ECHO)

    @staticmethod
    def network_ok(answer: dict) -> bool:
        return answer.get("t") == "0810" and answer.get("39") == "00"

    def top_up(self, topup: TopUp) -> dict:
        local_time, local_date = local_time_fields(topup.sent_at)
        return {
            "t": "0200", "2": topup.msisdn, "3": "000000", "4": f"{topup.amount:012d}",
            "7": transmission_time(topup.sent_at), "11": topup.stan, "12": local_time, "13": local_date,
            "32": self.institution_id, "37": topup.tracking_code, "41": self.terminal_id,
            "49": topup.currency,
        }

    def reversal(self, reference: str, reversal: OperatorReversal) -> dict:
        """0420 (0421 when repeated): the original's fields, new 7 and 11, and 90 naming the original."""
        original = ("0200" + reversal.original_stan + transmission_time(reversal.original_sent_at)
                    + self._original_institution() + "0" * 11)
        return {
            "t": "0421" if reversal.attempt else "0420", "2": reversal.msisdn, "3": "000000",
            "4": f"{reversal.amount:012d}", "7": transmission_time(utcnow()), "11": reference,
            "32": self.institution_id, "37": reversal.tracking_code, "41": self.terminal_id,
            "49": reversal.currency, "90": original,
        }

    @staticmethod
    def reversal_answer(answer: dict) -> ReversalAnswer:
        code = answer.get("39", "")
        return ReversalAnswer(settled=answer.get("t") == "0430" and code in ("00", "25"), operator_code=code)

    def parse_answer(self, answer: dict, topup: TopUp) -> OperatorAnswer:
        code = answer.get("39", "")
        if self._mismatch(answer, "0210", topup):
            return OperatorAnswer(response_code=self.codes.map("", topup, self.operator_id), operator_code=code)
        return OperatorAnswer(response_code=self.codes.map(code, topup, self.operator_id), operator_code=code,
                              approval_code=answer.get("38"), operator_ref=answer.get("62"))

    def handshake(self, message: dict) -> dict | None:
        """`accept` mode: the operator's first message must be its sign-on."""
        if message.get("t") == "0800" and message.get("70") == self.SIGN_ON:
            return self._network_answer(message)
        return None

    def operator_request(self, message: dict) -> dict | None:
        """Answer what the operator originates; None when the message is not a request."""
        if message.get("t") != "0800":
            return None
        if message.get("70") not in (self.SIGN_ON, self.ECHO, self.SIGN_OFF):
            log.warning("opa87 operator %s sent 0800 with 70=%r", self.operator_id, message.get("70"))
        return self._network_answer(message)

    @staticmethod
    def _network_answer(message: dict) -> dict:
        answer = {key: message[key] for key in ("7", "11", "41", "70") if key in message}
        answer["t"] = "0810"
        answer["39"] = "00"
        return answer


class Opb93Adapter(IsoAdapter):
    """opb93 (INTERFACES.md 2.2): ISO 8583:1993; 1804/1814 network, 1200/1210 top-up, action codes."""

    dialect_name = "opb93"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.functions: dict[str, str] = self.dialect.rules["functions"]
        self.accepted: str = self.dialect.rules["network_accepted"]

    @staticmethod
    def _local_time() -> str:
        return utcnow().strftime("%y%m%d%H%M%S")

    def _network(self, reference: str, function: str) -> dict:
        return {"t": "1804", "11": reference, "12": self._local_time(), "24": self.functions[function],
                "32": self.institution_id}

    def sign_on(self, reference: str) -> dict:
        return self._network(reference, "sign_on")

    def sign_off(self, reference: str) -> dict:
        return self._network(reference, "sign_off")

    def echo(self, reference: str) -> dict:
        return self._network(reference, "echo")

    def network_ok(self, answer: dict) -> bool:
        return answer.get("t") == "1814" and answer.get("39") == self.accepted

    def top_up(self, topup: TopUp) -> dict:
        return {
            "t": "1200", "3": "000000", "4": f"{topup.amount:012d}", "11": topup.stan,
            "12": topup.sent_at.strftime("%y%m%d%H%M%S"), "24": self.functions["top_up"],
            "32": self.institution_id, "37": topup.tracking_code, "49": topup.currency, "102": topup.msisdn,
        }

    def reversal(self, reference: str, reversal: OperatorReversal) -> dict:
        """1420 (1421 when repeated), function 400, with 56 naming the original 1200."""
        original = ("1200" + reversal.original_stan + reversal.original_sent_at.strftime("%y%m%d%H%M%S")
                    + f"{len(self.institution_id):02d}" + self.institution_id)
        return {
            "t": "1421" if reversal.attempt else "1420", "3": "000000", "4": f"{reversal.amount:012d}",
            "11": reference, "12": self._local_time(), "24": self.functions["reversal"],
            "32": self.institution_id, "37": reversal.tracking_code, "49": reversal.currency,
            "56": original, "102": reversal.msisdn,
        }

    @staticmethod
    def reversal_answer(answer: dict) -> ReversalAnswer:
        code = answer.get("39", "")
        return ReversalAnswer(settled=answer.get("t") == "1430" and code in ("400", "480"), operator_code=code)

    def parse_answer(self, answer: dict, topup: TopUp) -> OperatorAnswer:
        code = answer.get("39", "")
        if self._mismatch(answer, "1210", topup):
            return OperatorAnswer(response_code=self.codes.map("", topup, self.operator_id), operator_code=code)
        return OperatorAnswer(response_code=self.codes.map(code, topup, self.operator_id), operator_code=code,
                              approval_code=answer.get("38"), operator_ref=answer.get("63"))

    def handshake(self, message: dict) -> dict | None:
        if message.get("t") == "1804" and message.get("24") == self.functions["sign_on"]:
            return self._network_answer(message)
        return None

    def operator_request(self, message: dict) -> dict | None:
        if message.get("t") != "1804":
            return None
        return self._network_answer(message)

    def _network_answer(self, message: dict) -> dict:
        answer = {key: message[key] for key in ("11", "12", "24", "32") if key in message}
        answer["t"] = "1814"
        answer["39"] = self.accepted
        return answer


class OpcJsonAdapter:
    """opcjson (INTERFACES.md 2.3): JSON lines; references are the switch's transaction ids."""

    def __init__(self, operator_id: str, institution_id: str, terminal_id: str, secret: str | None = None):
        self.operator_id = operator_id
        self.secret = secret
        self.dialect = load_dialect("opcjson")
        self.codes = CodeTable(self.dialect.rules)

    @staticmethod
    def reference(counter: int) -> str:
        return ECHO_REFERENCE

    @staticmethod
    def reference_of(topup: TopUp) -> str:
        # A top-up's ref is its transaction id: unique across links, processes and restarts.
        return topup.txn_id

    @staticmethod
    def answer_key(message: dict) -> str | None:
        kind = message["type"]
        if kind == "pong":
            return ECHO_REFERENCE
        ref = message.get("ref")
        return ref if isinstance(ref, str) else None

    @staticmethod
    def sign_on(reference: str) -> None:
        return None  # nothing to sign on when the switch dials; `accept` links log in (handshake)

    sign_off = sign_on

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
    def reversal_reference(reversal: OperatorReversal) -> str:
        # The same ref on every repeat: the operator can tell a repeat from a new reversal.
        return f"{reversal.txn_id}-R"

    @staticmethod
    def reversal(reference: str, reversal: OperatorReversal) -> dict:
        return {"type": "reverse", "ref": reference, "original_ref": reversal.txn_id}

    @staticmethod
    def reversal_answer(answer: dict) -> ReversalAnswer:
        status = str(answer.get("status"))
        return ReversalAnswer(settled=answer.get("type") == "reverse_result" and status in ("OK", "NOT_FOUND"),
                              operator_code=status)

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
        if (message.get("type") == "login" and message.get("operator") == self.operator_id
                and isinstance(message.get("secret"), str) and self.secret is not None
                and hmac.compare_digest(message["secret"].encode(), self.secret.encode())):
            return {"type": "login_ok"}
        return None

    @staticmethod
    def operator_request(message: dict) -> dict | None:
        if message["type"] == "ping":
            return {"type": "pong"}
        return None


ADAPTERS = {"opa87": Opa87Adapter, "opb93": Opb93Adapter, "opcjson": OpcJsonAdapter}
Adapter = Opa87Adapter | Opb93Adapter | OpcJsonAdapter


def adapter_for(dialect: str, operator_id: str, institution_id: str, terminal_id: str,
                secret: str | None = None) -> Adapter:
    return ADAPTERS[dialect](operator_id, institution_id, terminal_id, secret)
