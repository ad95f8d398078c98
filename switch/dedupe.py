"""The fast first line against duplicates: a bounded window of recent dedupe keys.

The authority is the journal's unique key on (acquirer, tracking code, business
day), committed before a request goes to an operator. This window only turns an
obvious duplicate away without a journal round trip. It runs on aiocache: the
memory backend for one process, Redis when several processes or machines share
the work (there the window is bounded by a TTL of a little over a business day).
"""

from __future__ import annotations

from collections import deque
from datetime import date

from aiocache import Cache

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
            self._ttl: int | None = REDIS_KEY_TTL
            self._order: deque[str] | None = None
        else:
            self._cache = Cache(Cache.MEMORY)
            self._ttl = None
            self._order = deque()
        self.max_keys = max_keys

    async def claim(self, key: str) -> bool:
        """True if the key was not in the window (it is now); False if it was."""
        try:
            await self._cache.add(key, 1, ttl=self._ttl)
        except ValueError:
            return False
        order = self._order
        if order is not None:
            order.append(key)
            if len(order) > self.max_keys:
                await self._cache.delete(order.popleft())
        return True

    async def close(self) -> None:
        await self._cache.close()
