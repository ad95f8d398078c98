"""Operator dialect adapters: the contract a link holds them to, and the registry.

An adapter builds its dialect's messages from the switch's own model (`TopUp`,
`OperatorReversal`), names the reference an answer is matched by, answers what the
operator itself may send (echo, sign-on in `accept` mode, login), and reads the
operator's codes through the dialect's code tables (data in `codecs/`,
INTERFACES.md table 2.4). It holds no connection and no state: links own the I/O
(`switch.providers.link`). One module a dialect: `opa87`, `opb93`, `opcjson`;
`iso` holds what the two ISO dialects share and `codes` the code tables.
"""

from __future__ import annotations

from typing import Protocol

from switch.providers.adapters.opa87 import Opa87Adapter
from switch.providers.adapters.opb93 import Opb93Adapter
from switch.providers.adapters.opcjson import OpcJsonAdapter
from switch.providers.base import OperatorAnswer, OperatorReversal, ReversalAnswer, TopUp
from switch.wire import Dialect, JsonLinesDialect


class OperatorAdapter(Protocol):
    """What an operator link and pool need from a dialect. Messages are dicts as the dialect's
    codec takes them (ISO field numbers as keys and "t" for the MTI; JSON objects for opcjson)."""

    operator_id: str
    dialect: Dialect | JsonLinesDialect   # framing and codec
    signs_on: bool                        # a dialled link signs on before traffic and off at the end

    def reference(self, counter: int) -> str:
        """The reference of a network message (sign-on, sign-off, echo) from the link's counter."""

    def reference_of(self, topup: TopUp) -> str:
        """The reference a top-up is sent and matched by (fixed before it was journaled)."""

    def reversal_reference(self, reversal: OperatorReversal, counter: int) -> str:
        """The reference of a reversal or its repeat: fresh from `counter`, or derived from the original."""

    def answer_key(self, message: dict) -> str | None:
        """The reference an incoming answer carries; None when it carries none."""

    def sign_on(self, reference: str) -> dict:
        """Only called when `signs_on`."""

    def sign_off(self, reference: str) -> dict:
        """Only called when `signs_on`."""

    def echo(self, reference: str) -> dict: ...

    def network_ok(self, answer: dict) -> bool:
        """The answer to a sign-on or echo accepts it."""

    def top_up(self, topup: TopUp) -> dict: ...

    def parse_answer(self, answer: dict, topup: TopUp) -> OperatorAnswer:
        """The answer to `topup`, mapped for the acquirer (an answer that does not fit reads as declined)."""

    def reversal(self, reference: str, reversal: OperatorReversal) -> dict: ...

    def reversal_answer(self, answer: dict) -> ReversalAnswer:
        """Settled, and whether there was nothing to reverse, from the dialect's `reversal_answers`."""

    def is_nothing_to_reverse(self, operator_code: str) -> bool: ...

    def handshake(self, message: dict) -> dict | None:
        """`accept` mode: the reply to a valid first message (sign-on or login); None closes the link."""

    def operator_request(self, message: dict) -> dict | None:
        """The reply to a request the operator originates (echo, sign-on, ping); None for anything else."""


ADAPTERS = {"opa87": Opa87Adapter, "opb93": Opb93Adapter, "opcjson": OpcJsonAdapter}


def adapter_for(dialect: str, operator_id: str, institution_id: str, terminal_id: str,
                secret: str | None = None) -> OperatorAdapter:
    return ADAPTERS[dialect](operator_id, institution_id, terminal_id, secret)


__all__ = ["ADAPTERS", "OperatorAdapter", "Opa87Adapter", "Opb93Adapter", "OpcJsonAdapter", "adapter_for"]
