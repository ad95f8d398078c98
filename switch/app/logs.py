"""Logs an operations team can live with: one line per event, text or JSON, and never a flood.

Events that can repeat at traffic rate (a 91 for every top-up while an operator is down, a
bad MAC from a misconfigured terminal) are logged with `extra={"repeat": "what repeats"}`.
`Aggregating` writes the first of them at once, then counts the rest and writes one summary
line per `what` and period ("MCI: top-up answered 91, nothing sent: 2,314 more in the last
10 s"), so an outage shows at once and never fills the disk.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from datetime import datetime, timezone

import orjson

REPEAT_PERIOD = 10.0   # seconds per summary line of a repeated event
FLUSH_EVERY = 1.0      # seconds between checks for summaries that are due
TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
# LogRecord's own attributes: whatever else a record carries came in `extra` and goes into the JSON.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "repeat"}


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC, ISO 8601), level, logger, message, and the record's extras."""

    def format(self, record: logging.LogRecord) -> str:
        event = {"ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
                 "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        for key, value in record.__dict__.items():
            if key not in _STANDARD:
                event[key] = value
        if record.exc_info:
            event["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(event, default=str).decode()


class _Repeats:
    __slots__ = ("started", "count", "last")

    def __init__(self, started: float) -> None:
        self.started = started
        self.count = 0
        self.last: logging.LogRecord | None = None


class Aggregating(logging.Handler):
    """Passes records to `target`; a record with a `repeat` attribute that repeats within the period
    is counted instead, and summarised once per period."""

    def __init__(self, target: logging.Handler, period: float = REPEAT_PERIOD) -> None:
        super().__init__()
        self.target = target
        self.period = period
        self._repeats: dict[str, _Repeats] = {}
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        what = getattr(record, "repeat", None)
        if what is not None:
            now = time.monotonic()
            with self._guard:
                repeats = self._repeats.get(what)
                if repeats is not None and now - repeats.started < self.period:
                    repeats.count += 1
                    repeats.last = record
                    return
                summary = self._summary(what, repeats, now) if repeats is not None else None
                self._repeats[what] = _Repeats(now)
            if summary is not None:
                self.target.handle(summary)
        self.target.handle(record)

    def flush_due(self) -> None:
        """Write the summaries whose period has ended (called by a timer, and at exit)."""
        now = time.monotonic()
        due = []
        with self._guard:
            for what, repeats in list(self._repeats.items()):
                if now - repeats.started >= self.period:
                    del self._repeats[what]
                    summary = self._summary(what, repeats, now)
                    if summary is not None:
                        due.append(summary)
        for summary in due:
            self.target.handle(summary)

    @staticmethod
    def _summary(what: str, repeats: _Repeats, now: float) -> logging.LogRecord | None:
        if not repeats.count:
            return None
        last = repeats.last
        summary = logging.makeLogRecord(dict(last.__dict__))
        summary.msg = "%s: %s more in the last %.0f s (the last: %s)"
        summary.args = (what, f"{repeats.count:,}", now - repeats.started, last.getMessage())
        summary.repeated = repeats.count
        del summary.repeat
        return summary

    def close(self) -> None:
        """At exit: every summary still pending, due or not."""
        with self._guard:
            pending, self._repeats = self._repeats, {}
        now = time.monotonic()
        for what, repeats in pending.items():
            summary = self._summary(what, repeats, now)
            if summary is not None:
                self.target.handle(summary)
        super().close()


def setup_logging(level: str, log_format: str = "text") -> Aggregating:
    """stderr, in `log_format` ("text" or "json"), repeated events aggregated; returns the handler."""
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    handler = Aggregating(stream)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper()))
    flusher = threading.Thread(target=_flush_forever, args=(handler,), name="log summaries", daemon=True)
    flusher.start()
    return handler


def _flush_forever(handler: Aggregating) -> None:
    while True:
        time.sleep(FLUSH_EVERY)
        handler.flush_due()
