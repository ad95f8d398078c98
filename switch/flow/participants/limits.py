"""Limits: per-acquirer rules (INTERFACES.md 1.6): allowed operators (57), amount per top-up
and per business day (61), top-ups to one MSISDN in a period (65).

Daily totals and frequency counts are kept in memory, per process: a top-up
reserves its place when it passes the checks and gives it back if it is not
approved. With several switch processes each enforces its share; see
docs/decisions.md.
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from datetime import date

from switch.app.config import AcquirerConfig
from switch.flow.codes import ResponseCode
from switch.flow.states import TxnState
from switch.flow.transaction import Transaction

NOT_PERMITTED, OVER_LIMIT, TOO_FREQUENT = ResponseCode.NOT_PERMITTED, ResponseCode.OVER_LIMIT, ResponseCode.TOO_FREQUENT
MAX_TRACKED_NUMBERS = 1_000_000  # (acquirer, MSISDN) pairs remembered for frequency limits


class AcquirerRules:
    def __init__(self) -> None:
        self._daily: dict[tuple[str, date], int] = defaultdict(int)
        self._recent: dict[tuple[str, str], deque[float]] = {}

    def check_and_reserve(self, acquirer: AcquirerConfig, operator_id: str, amount: int, msisdn: str,
                          business_day: date) -> ResponseCode | None:
        """The refusal code, or None: then the top-up holds its place until `release` or for good."""
        if acquirer.allowed_operators and operator_id not in acquirer.allowed_operators:
            return NOT_PERMITTED
        if (acquirer.min_amount is not None and amount < acquirer.min_amount) or \
                (acquirer.max_amount is not None and amount > acquirer.max_amount):
            return OVER_LIMIT
        day_key = (acquirer.institution_id, business_day)
        if acquirer.daily_limit is not None and self._daily[day_key] + amount > acquirer.daily_limit:
            return OVER_LIMIT
        limit = acquirer.frequency_limit
        if limit is not None:
            now = time.monotonic()
            recent = self._recent.get((acquirer.institution_id, msisdn))
            if recent is None:
                if len(self._recent) >= MAX_TRACKED_NUMBERS:
                    self._forget_idle(now, limit.period)
                recent = self._recent[(acquirer.institution_id, msisdn)] = deque()
            while recent and recent[0] <= now - limit.period:
                recent.popleft()
            if len(recent) >= limit.count:
                return TOO_FREQUENT
            recent.append(now)
        self._daily[day_key] += amount
        return None

    def release(self, acquirer: AcquirerConfig, amount: int, msisdn: str, business_day: date) -> None:
        """A reserved top-up that was not approved: it does not count."""
        self._daily[(acquirer.institution_id, business_day)] -= amount
        recent = self._recent.get((acquirer.institution_id, msisdn))
        if recent:
            recent.pop()

    def _forget_idle(self, now: float, period: float) -> None:
        for key in [key for key, times in self._recent.items() if not times or times[-1] <= now - period]:
            del self._recent[key]


class Limits:
    """Reserves the top-up's place in its acquirer's limits; a refusal is held until the key is
    claimed (see Transaction.refusal). Gives the place back unless the top-up was approved or its
    outcome is unknown."""

    def __init__(self, rules: AcquirerRules) -> None:
        self.rules = rules

    async def prepare(self, txn: Transaction) -> None:
        if txn.refusal is not None:
            return None
        request = txn.request
        txn.refusal = self.rules.check_and_reserve(request.payer.acquirer, txn.operator_id, request.amount,
                                                   txn.msisdn, txn.business_day)
        txn.reserved = txn.refusal is None
        return None

    async def end(self, txn: Transaction) -> None:
        if txn.reserved and txn.state in (TxnState.REFUSED, TxnState.DECLINED):
            self.rules.release(txn.request.payer.acquirer, txn.request.amount, txn.msisdn, txn.business_day)
