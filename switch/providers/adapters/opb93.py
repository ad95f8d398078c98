"""Dialect opb93 (INTERFACES.md 2.2): ISO 8583:1993, 3-digit action codes; 1804/1814
network management, 1200/1210 top-up, 1420/1421 -> 1430 reversal with 56 naming
the original. Function codes (field 24) and the accepted action code are data in
codecs/opb93.json.
"""

from __future__ import annotations

from datetime import datetime

from switch.clock import utcnow
from switch.providers.adapters.iso import IsoAdapter
from switch.providers.base import OperatorReversal, TopUp


def _field_12(moment: datetime) -> str:
    """Field 12 in this dialect: YYMMDDhhmmss (UTC, as the switch keeps its times)."""
    return moment.strftime("%y%m%d%H%M%S")


class Opb93Adapter(IsoAdapter):
    dialect_name = "opb93"
    answer_mti = "1210"
    reversal_answer_mti = "1430"
    operator_ref_field = "63"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.functions: dict[str, str] = self.dialect.rules["functions"]
        self.accepted: str = self.dialect.rules["network_accepted"]

    def _network(self, reference: str, function: str) -> dict:
        return {"t": "1804", "11": reference, "12": _field_12(utcnow()), "24": self.functions[function],
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
            "12": _field_12(topup.sent_at), "24": self.functions["top_up"],
            "32": self.institution_id, "37": topup.tracking_code, "49": topup.currency, "102": topup.msisdn,
        }

    def reversal(self, reference: str, reversal: OperatorReversal) -> dict:
        """1420 (1421 when repeated), function 400, with 56 naming the original 1200."""
        original = ("1200" + reversal.original_stan + _field_12(reversal.original_sent_at)
                    + f"{len(self.institution_id):02d}" + self.institution_id)
        return {
            "t": "1421" if reversal.attempt else "1420", "3": "000000", "4": f"{reversal.amount:012d}",
            "11": reference, "12": _field_12(utcnow()), "24": self.functions["reversal"],
            "32": self.institution_id, "37": reversal.tracking_code, "49": reversal.currency,
            "56": original, "102": reversal.msisdn,
        }

    def handshake(self, message: dict) -> dict | None:
        """`accept` mode: the operator's first message must be its sign-on."""
        if message.get("t") == "1804" and message.get("24") == self.functions["sign_on"]:
            return self._network_answer(message)
        return None

    def operator_request(self, message: dict) -> dict | None:
        """Answer what the operator originates; None when the message is not a request."""
        if message.get("t") != "1804":
            return None
        return self._network_answer(message)

    def _network_answer(self, message: dict) -> dict:
        answer = {key: message[key] for key in ("11", "12", "24", "32") if key in message}
        answer["t"] = "1814"
        answer["39"] = self.accepted
        return answer
