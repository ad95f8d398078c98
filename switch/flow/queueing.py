"""How long work queues here, for admission to read (INTERFACES.md 1.5: overload gets 91 at
once, never an unbounded queue).

`IntakeQueue` follows the intakes waiting for their journal commit and measures a standing
queue the way CoDel does: not the longest wait (group commit makes every wait a sawtooth up
to one commit time, a burst is not overload), but the shortest wait of the intakes that
finished in the last window of `WINDOW` seconds. When even the fastest of them waited longer
than the objective, commits are behind and admission turns new top-ups away; the queue then
drains (nothing new joins it) and admission opens again by itself. An intake waiting longer
than a whole window beyond the objective (a journal that stopped committing) counts too.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict

WINDOW = 0.1   # seconds over which the shortest commit wait is taken (CoDel's interval)


class IntakeQueue:
    def __init__(self, window: float = WINDOW) -> None:
        self._waiting: OrderedDict[str, float] = OrderedDict()   # txn_id -> when its intake was submitted
        self._window = window
        self._window_start = time.monotonic()
        self._window_fastest = math.inf   # the shortest wait of an intake finished in this window
        self._standing = 0.0              # the shortest wait of the last full window

    def enter(self, txn_id: str) -> None:
        self._waiting[txn_id] = time.monotonic()

    def leave(self, txn_id: str) -> None:
        submitted = self._waiting.pop(txn_id, None)
        if submitted is None:
            return
        now = time.monotonic()
        self._roll(now)
        self._window_fastest = min(self._window_fastest, now - submitted)

    def delay(self) -> float:
        """Seconds of standing queue in front of the journal's commits (0 when there is none)."""
        now = time.monotonic()
        self._roll(now)
        oldest = 0.0
        for submitted in self._waiting.values():
            oldest = now - submitted
            break
        return max(self._standing, oldest - self._window)

    def _roll(self, now: float) -> None:
        if now - self._window_start >= self._window:
            # A window in which no intake finished had no queue (or a stuck journal, which `delay` sees).
            self._standing = 0.0 if self._window_fastest == math.inf else self._window_fastest
            self._window_fastest = math.inf
            self._window_start = now
