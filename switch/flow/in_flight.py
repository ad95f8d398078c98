"""The transactions in flight in this process, by dedupe key.

A repeat (0201) of a top-up still in flight waits here for the original's end instead
of reading the journal, and so does an acquirer's reversal of it. The count is what
admission compares with the switch's in-flight cap.
"""

from __future__ import annotations

import asyncio


class InFlight:
    def __init__(self) -> None:
        self._ends: dict[str, asyncio.Future] = {}

    def __len__(self) -> int:
        return len(self._ends)

    def begin(self, key: str) -> None:
        self._ends[key] = asyncio.get_running_loop().create_future()

    def end(self, key: str, result) -> None:
        """`result`: the ended transaction, or None when it ended by a bug."""
        self._ends.pop(key).set_result(result)

    def waiting_for(self, key: str) -> asyncio.Future | None:
        """The end-to-be of the transaction holding `key` here, if one does."""
        return self._ends.get(key)
