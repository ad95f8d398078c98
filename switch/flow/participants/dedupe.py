"""Dedupe, the fast first line against duplicates: a bounded window of recent dedupe keys.

The authority is the journal's unique key on (acquirer, tracking code, business
day), committed before a request goes to an operator. This window only turns an
obvious duplicate away without a journal round trip. Redis (through aiocache)
when several processes or machines share the work, bounded by a TTL of a little
over a business day; in one process an insertion-ordered dict bounded by count.
aiocache's memory backend was measured at 30-50 us a claim (coroutine layers and a
timer per key, bench/RESULTS.md) against a target of 5 us; the window needs neither
TTLs nor serialisation, so the memory path is a plain dict.
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import date

from aiocache import Cache

from switch.flow.codes import ResponseCode
from switch.flow.in_flight import InFlight
from switch.flow.transaction import Transaction

REDIS_KEY_TTL = 26 * 3600  # a business day plus slack for clock skew and cutover


def dedupe_key(acquirer_id: str, tracking_code: str, business_day: date) -> str:
    return f"{business_day.isoformat()}:{acquirer_id}:{tracking_code}"


class DedupeWindow:
    def __init__(self, max_keys: int, backend: str = "memory", redis_url: str | None = None):
        if backend == "redis":
            from urllib.parse import urlparse
            url = urlparse(redis_url or "redis://127.0.0.1:6379/0")
            self._cache = Cache(Cache.REDIS, endpoint=url.hostname, port=url.port or 6379,
                                db=int((url.path or "/0").lstrip("/") or 0), namespace="airswitch:dedupe:")
        else:
            self._cache = None
        self._recent: OrderedDict[str, None] = OrderedDict()  # the oldest key first; popitem is O(1)
        self.max_keys = max_keys

    async def claim(self, key: str) -> bool:
        """True if the key was not in the window (it is now); False if it was."""
        if self._cache is None:
            return self.claim_local(key)
        try:
            await self._cache.add(key, 1, ttl=REDIS_KEY_TTL)
        except ValueError:
            return False
        return True

    def claim_local(self, key: str) -> bool:
        recent = self._recent
        if key in recent:
            return False
        recent[key] = None
        if len(recent) > self.max_keys:
            recent.popitem(last=False)
        return True

    @property
    def size(self) -> int | None:
        """Keys in the in-memory window; None with Redis (the window is shared, its size is Redis's)."""
        return len(self._recent) if self._cache is None else None

    async def close(self) -> None:
        if self._cache is not None:
            await self._cache.close()


class Dedupe:
    """Claims the key in the window (94 if it is there: not journaled under the key), then holds
    it in flight here until the transaction ends, for repeats and reversals to wait on."""

    def __init__(self, window: DedupeWindow, in_flight: InFlight) -> None:
        self.window = window
        self.in_flight = in_flight

    async def prepare(self, txn: Transaction) -> ResponseCode | None:
        # In flight here but gone from the window (a full window forgets the oldest keys): a duplicate too.
        if not await self.window.claim(txn.key) or self.in_flight.waiting_for(txn.key) is not None:
            return ResponseCode.DUPLICATE
        self.in_flight.begin(txn.key)
        txn.in_flight = True
        return None

    async def end(self, txn: Transaction) -> None:
        if txn.in_flight:
            self.in_flight.end(txn.key, txn if txn.state is not None else None)
