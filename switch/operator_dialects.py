"""What each operator dialect puts on the wire, and how its answers read for the acquirer.

An adapter builds the dialect's messages from the switch's own model and maps
the operator's codes to field 39 with the dialect's code table (kept as data in
`codecs/`, INTERFACES.md table 2.4). It holds no connection and no state.
"""

from __future__ import annotations

import logging

from switch.clock import local_time_fields, transmission_time, utcnow
from switch.model import OperatorAnswer, TopUp
from switch.wire import load_dialect

log = logging.getLogger("airswitch.operator")

SIGN_ON, SIGN_OFF, ECHO = "001", "002", "301"


class Opa87Adapter:
    """opa87 (INTERFACES.md 2.1): ISO 8583:1987, all ASCII; answers matched by 11 (41 is ours, constant)."""

    def __init__(self, institution_id: str, terminal_id: str):
        self.dialect = load_dialect("opa87")
        self.institution_id = institution_id
        self.terminal_id = terminal_id
        rules = self.dialect.rules
        self._answer_codes: dict[str, str] = rules["answer_codes"]
        self._other_answer: str = rules["other_answer"]
        self._alert_codes = frozenset(rules["alert_codes"])

    def _network(self, stan: str, code: str) -> dict:
        return {"t": "0800", "7": transmission_time(utcnow()), "11": stan, "41": self.terminal_id, "70": code}

    def sign_on(self, stan: str) -> dict:
        return self._network(stan, SIGN_ON)

    def sign_off(self, stan: str) -> dict:
        return self._network(stan, SIGN_OFF)

    def echo(self, stan: str) -> dict:
        return self._network(stan, ECHO)

    @staticmethod
    def network_ok(answer: dict) -> bool:
        return answer.get("t") == "0810" and answer.get("39") == "00"

    def top_up(self, stan: str, topup: TopUp) -> dict:
        now = utcnow()
        local_time, local_date = local_time_fields(now)
        return {
            "t": "0200", "2": topup.msisdn, "3": "000000", "4": f"{topup.amount:012d}",
            "7": transmission_time(now), "11": stan, "12": local_time, "13": local_date,
            "32": self.institution_id, "37": topup.tracking_code, "41": self.terminal_id,
            "49": topup.currency,
        }

    def parse_answer(self, answer: dict, topup: TopUp) -> OperatorAnswer:
        code = answer.get("39", "")
        if answer.get("t") != "0210" or answer.get("37") != topup.tracking_code:
            log.error("opa87 answer does not fit its request (MTI %s, 37 %r for %r): treated as declined",
                      answer.get("t"), answer.get("37"), topup.tracking_code)
            return OperatorAnswer(response_code=self._other_answer, operator_code=code)
        if code in self._alert_codes:
            log.critical("ALERT operator answered duplicate (39=%s) for tracking code %s: the switch never "
                         "sends a reference twice", code, topup.tracking_code)
        return OperatorAnswer(
            response_code=self._answer_codes.get(code, self._other_answer),
            operator_code=code,
            approval_code=answer.get("38"),
            operator_ref=answer.get("62"),
        )

    @staticmethod
    def is_request(message: dict) -> bool:
        """Messages the operator originates (its echo); everything else is an answer."""
        return message.get("t") == "0800"

    def answer_operator_request(self, message: dict) -> dict | None:
        if message.get("70") == ECHO:
            return {"t": "0810", "7": message.get("7") or transmission_time(utcnow()),
                    "11": message.get("11", "000000"), "39": "00", "70": ECHO}
        log.warning("opa87: operator sent 0800 with 70=%r; ignored", message.get("70"))
        return None

    @staticmethod
    def match_key(message: dict) -> str:
        return message.get("11", "")
