"""Transaction states and the transitions between them, declared once (docs/transactions.md).

Every row the journal writes that decides a transaction's state names one `TxnState`;
whoever writes one checks the move with `check_transition(current, new)` (current is
None for a transaction that has no outcome yet). A move this table does not allow is
a bug on our side and raises `IllegalTransition`.

    (intake) -> refused | declined | approved | unknown | inquiry
    approved -> reversal_pending        an acquirer's 0400/0420
    approved -> unknown                 an approval whose record was late: compensated by a reversal
    approved, declined -> reversed | reversal_failed
                                        an acquirer's reversal stored while another process still held
                                        the original, which then ended (see docs/decisions.md)
    unknown, reversal_pending -> reversed | reversal_failed     store-and-forward at the operator
    reversed -> unknown                 a late approval after "nothing to reverse": reversed again
    reversal_failed -> resolved         a person settled it by other means (only once sending failed)
"""

from __future__ import annotations

from enum import StrEnum

from switch.errors import LocalProtocolError


class TxnState(StrEnum):
    REFUSED = "refused"                   # turned away by the switch before any operator
    DECLINED = "declined"                 # a non-00 answer (an operator's, or no live link)
    APPROVED = "approved"
    UNKNOWN = "unknown"                   # sent, never answered: a reversal is owed
    INQUIRY = "inquiry"                   # a balance inquiry, answered; no money moved
    REVERSAL_PENDING = "reversal_pending"  # an acquirer asked to undo an approval
    REVERSED = "reversed"
    REVERSAL_FAILED = "reversal_failed"   # store-and-forward gave up: needs manual reconciliation
    RESOLVED = "resolved"                 # closed by a person


S = TxnState
_REVERSAL_ENDS = frozenset({S.REVERSED, S.REVERSAL_FAILED})
TRANSITIONS: dict[TxnState | None, frozenset[TxnState]] = {
    None: frozenset({S.REFUSED, S.DECLINED, S.APPROVED, S.UNKNOWN, S.INQUIRY,
                     S.REVERSAL_PENDING}),  # reversal_pending: held by another process, reversed before it ends
    S.APPROVED: frozenset({S.REVERSAL_PENDING, S.UNKNOWN}) | _REVERSAL_ENDS,
    S.DECLINED: _REVERSAL_ENDS,
    S.UNKNOWN: _REVERSAL_ENDS,
    S.REVERSAL_PENDING: _REVERSAL_ENDS,
    S.REVERSAL_FAILED: frozenset({S.RESOLVED}),
    S.REVERSED: frozenset({S.UNKNOWN}),
    S.REFUSED: frozenset(),
    S.INQUIRY: frozenset(),
    S.RESOLVED: frozenset(),
}
FINAL_STATES = frozenset({S.APPROVED, S.DECLINED, S.REFUSED, S.REVERSED, S.RESOLVED, S.INQUIRY})


class IllegalTransition(LocalProtocolError):
    """A state move the table does not allow: a bug in the switch, never a peer's fault."""


def check_transition(current: str | None, new: TxnState) -> TxnState:
    """Return `new` if a transaction in `current` may move to it; raise IllegalTransition otherwise."""
    allowed = TRANSITIONS.get(TxnState(current) if current is not None else None)
    if allowed is None or new not in allowed:
        raise IllegalTransition(f"transaction state {current} -> {new} is not allowed")
    return new
