"""Dialect opa87 (INTERFACES.md 2.1): ISO 8583:1987 all ASCII; 0800/0810 network
management (70 = 001 sign-on, 002 sign-off, 301 echo), 0200/0210 top-up,
0420/0421 -> 0430 reversal advice with 90 naming the original.
"""

from __future__ import annotations

import logging

from switch.clock import local_time_fields, transmission_time, utcnow
from switch.providers.adapters.iso import IsoAdapter
from switch.providers.base import OperatorReversal, TopUp

log = logging.getLogger("airswitch.operator")

SIGN_ON, SIGN_OFF, ECHO = "001", "002", "301"   # field 70


class Opa87Adapter(IsoAdapter):
    dialect_name = "opa87"
    answer_mti = "0210"
    reversal_answer_mti = "0430"
    operator_ref_field = "62"

    def _network(self, reference: str, code: str) -> dict:
        return {"t": "0800", "7": transmission_time(utcnow()), "11": reference, "41": self.terminal_id,
                "70": code}

    def sign_on(self, reference: str) -> dict:
        return self._network(reference, SIGN_ON)

    def sign_off(self, reference: str) -> dict:
        return self._network(reference, SIGN_OFF)

    def echo(self, reference: str) -> dict:
        return self._network(reference, ECHO)

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
                    + self.institution_id.zfill(11) + "0" * 11)
        return {
            "t": "0421" if reversal.attempt else "0420", "2": reversal.msisdn, "3": "000000",
            "4": f"{reversal.amount:012d}", "7": transmission_time(utcnow()), "11": reference,
            "32": self.institution_id, "37": reversal.tracking_code, "41": self.terminal_id,
            "49": reversal.currency, "90": original,
        }

    def handshake(self, message: dict) -> dict | None:
        """`accept` mode: the operator's first message must be its sign-on."""
        if message.get("t") == "0800" and message.get("70") == SIGN_ON:
            return self._network_answer(message)
        return None

    def operator_request(self, message: dict) -> dict | None:
        """Answer what the operator originates; None when the message is not a request."""
        if message.get("t") != "0800":
            return None
        if message.get("70") not in (SIGN_ON, ECHO, SIGN_OFF):
            log.warning("opa87 operator %s sent 0800 with 70=%r", self.operator_id, message.get("70"))
        return self._network_answer(message)

    @staticmethod
    def _network_answer(message: dict) -> dict:
        answer = {key: message[key] for key in ("7", "11", "41", "70") if key in message}
        answer["t"] = "0810"
        answer["39"] = "00"
        return answer
