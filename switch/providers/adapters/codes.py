"""A dialect's code tables: what an operator's answer code means for the acquirer
(INTERFACES.md table 2.4) and for a reversal. The tables are data, in the `rules`
of the dialect's file in `codecs/`; this module only reads them.
"""

from __future__ import annotations

import logging

from switch.errors import LocalProtocolError
from switch.providers.base import ReversalAnswer, TopUp

log = logging.getLogger("airswitch.operator")

REVERSED = "reversed"                      # the operator undid the credit
NOTHING_TO_REVERSE = "nothing_to_reverse"  # the operator never credited it: the reversal is done all the same
REVERSAL_OUTCOMES = (REVERSED, NOTHING_TO_REVERSE)


class CodeTable:
    """One dialect's `answer_codes`, `other_answer`, `alert_codes` and `reversal_answers`."""

    def __init__(self, dialect_name: str, rules: dict):
        self._codes: dict[str, str] = rules["answer_codes"]
        self._other: str = rules["other_answer"]
        self._alerts = frozenset(rules["alert_codes"])
        self._reversals: dict[str, str] = rules["reversal_answers"]
        unknown = sorted(set(self._reversals.values()) - set(REVERSAL_OUTCOMES))
        if unknown:
            raise LocalProtocolError(f"codecs/{dialect_name}.json: rules.reversal_answers names {unknown}; "
                                     f"each code maps to one of {list(REVERSAL_OUTCOMES)}")

    def map(self, operator_code: str, topup: TopUp, operator_id: str) -> str:
        """Field 39 for the acquirer; a code the table marks as an alert is logged as one."""
        if operator_code in self._alerts:
            log.critical("ALERT operator %s answered duplicate (%s) for tracking code %s: the switch never "
                         "sends a reference twice", operator_id, operator_code, topup.tracking_code)
        return self._codes.get(operator_code, self._other)

    def reversal_answer(self, operator_code: str, answers_a_reversal: bool) -> ReversalAnswer:
        """Settled when the message answers a reversal and its code is in the table; not settled otherwise."""
        outcome = self._reversals.get(operator_code) if answers_a_reversal else None
        return ReversalAnswer(settled=outcome is not None, operator_code=operator_code,
                              nothing_to_reverse=outcome == NOTHING_TO_REVERSE)

    def is_nothing_to_reverse(self, operator_code: str) -> bool:
        return self._reversals.get(operator_code) == NOTHING_TO_REVERSE
