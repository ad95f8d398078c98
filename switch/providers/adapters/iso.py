"""What the ISO 8583 operator dialects (opa87, opb93) share: STANs as references,
matching by field 11, the tracking-code check on an answer, and reading top-up
and reversal answers through the dialect's code table. Each dialect's own
messages live in its module.
"""

from __future__ import annotations

import logging

from switch.providers.adapters.codes import CodeTable
from switch.providers.base import OperatorAnswer, OperatorReversal, ReversalAnswer, TopUp
from switch.wire import Dialect, load_dialect

log = logging.getLogger("airswitch.operator")


def stan(counter: int) -> str:
    """Field 11 from a running counter: six digits, 000000 never used."""
    return f"{counter % 1_000_000 or 1:06d}"


class IsoAdapter:
    """The shared half of an ISO dialect; a subclass names its dialect, MTIs and message layouts."""

    dialect_name = ""
    signs_on = True              # 0800/1804 sign-on when the switch dials; the operator's when it dials in
    answer_mti = ""              # the answer to a top-up
    reversal_answer_mti = ""     # the answer to a reversal or its repeat
    operator_ref_field = ""      # where the answer carries the operator's transaction id

    def __init__(self, operator_id: str, institution_id: str, terminal_id: str, secret: str | None = None):
        self.operator_id = operator_id
        self.institution_id = institution_id
        self.terminal_id = terminal_id
        self.dialect: Dialect = load_dialect(self.dialect_name)
        self.codes = CodeTable(self.dialect_name, self.dialect.rules)

    @staticmethod
    def reference(counter: int) -> str:
        """A network message's own reference: the next STAN."""
        return stan(counter)

    @staticmethod
    def reference_of(topup: TopUp) -> str:
        return topup.stan

    @staticmethod
    def reversal_reference(reversal: OperatorReversal, counter: int) -> str:
        """Every reversal and repeat is a new message with a new STAN (the original is named in 90/56)."""
        return stan(counter)

    @staticmethod
    def answer_key(message: dict) -> str | None:
        return message.get("11")

    def parse_answer(self, answer: dict, topup: TopUp) -> OperatorAnswer:
        code = answer.get("39", "")
        if answer.get("t") != self.answer_mti or answer.get("37") != topup.tracking_code:
            log.error("%s answer does not fit its request (MTI %s, 37 %r for %r): treated as declined",
                      self.dialect_name, answer.get("t"), answer.get("37"), topup.tracking_code)
            return OperatorAnswer(response_code=self.codes.map("", topup, self.operator_id), operator_code=code)
        return OperatorAnswer(response_code=self.codes.map(code, topup, self.operator_id), operator_code=code,
                              approval_code=answer.get("38"), operator_ref=answer.get(self.operator_ref_field))

    def reversal_answer(self, answer: dict) -> ReversalAnswer:
        return self.codes.reversal_answer(answer.get("39", ""), answer.get("t") == self.reversal_answer_mti)

    def is_nothing_to_reverse(self, operator_code: str) -> bool:
        return self.codes.is_nothing_to_reverse(operator_code)
