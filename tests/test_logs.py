"""Logs: one line per event, JSON when asked, and events that repeat at traffic rate aggregated."""

from __future__ import annotations

import asyncio
import logging

import orjson
import pytest

from switch.app.logs import Aggregating, JsonFormatter
from tests.support import BankClient, postgres_journal, running_switch, top_up


@pytest.fixture
def journal(pg_dsn, pg_schema):
    return lambda: postgres_journal(pg_dsn, pg_schema)


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def record(message: str, *args, repeat: str | None = None, level: int = logging.WARNING) -> logging.LogRecord:
    made = logging.LogRecord("airswitch.test", level, __file__, 1, message, args, None)
    if repeat is not None:
        made.repeat = repeat
    return made


def test_a_repeated_event_is_written_once_then_summarised_with_its_count():
    capture = Capture()
    handler = Aggregating(capture, period=60.0)
    for n in range(1000):
        handler.handle(record("txn %d: 91", n, repeat="MCI: top-ups answered 91, nothing sent"))
    assert [r.getMessage() for r in capture.records] == ["txn 0: 91"]
    handler.close()   # at exit, or when the period ends: one summary line
    assert len(capture.records) == 2
    summary = capture.records[1]
    assert summary.getMessage().startswith("MCI: top-ups answered 91, nothing sent: 999 more in the last")
    assert summary.getMessage().endswith("(the last: txn 999: 91)")
    assert summary.repeated == 999


def test_events_without_a_repeat_key_and_different_keys_are_each_written():
    capture = Capture()
    handler = Aggregating(capture, period=60.0)
    handler.handle(record("link MCI up"))
    handler.handle(record("link MCI up"))
    handler.handle(record("a", repeat="one thing"))
    handler.handle(record("b", repeat="another thing"))
    assert [r.getMessage() for r in capture.records] == ["link MCI up", "link MCI up", "a", "b"]


def test_a_summary_is_due_once_its_period_has_ended():
    capture = Capture()
    handler = Aggregating(capture, period=0.0)
    handler.handle(record("first", repeat="x"))
    handler.flush_due()
    assert len(capture.records) == 1          # nothing repeated: no summary
    handler.period = 60.0
    handler.handle(record("again", repeat="x"))   # a new period starts
    handler.handle(record("and again", repeat="x"))
    handler.period = 0.0
    handler.flush_due()
    assert [r.getMessage()[:14] for r in capture.records] == ["first", "again", "x: 1 more in t"]


def test_json_lines_carry_level_logger_message_and_extras():
    line = JsonFormatter().format(record("txn %s: %s", "abc", "91", repeat="ignored"))
    event = orjson.loads(line)
    assert event["level"] == "WARNING" and event["logger"] == "airswitch.test"
    assert event["message"] == "txn abc: 91" and event["ts"].endswith("+00:00")
    assert "repeat" not in event
    extra = logging.LogRecord("x", logging.INFO, __file__, 1, "m", (), None)
    extra.operator = "MCI"
    assert orjson.loads(JsonFormatter().format(extra))["operator"] == "MCI"


def test_an_operator_down_under_a_thousand_top_ups_a_second_gives_a_bounded_number_of_lines(journal):
    capture = Capture()
    handler = Aggregating(capture, period=10.0)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.WARNING)

    async def scenario():
        async with running_switch(journal()) as switch:
            await switch.simulators["MCI"].stop()
            await asyncio.sleep(0.2)
            bank = await BankClient.connect(switch.port)
            loop = asyncio.get_running_loop()
            started = loop.time()
            answers = []
            for second_tenth in range(10):            # 1,000 top-ups over about a second
                batch = [bank.request(top_up(bank.next_stan())) for _ in range(100)]
                answers += await asyncio.gather(*batch)
                await asyncio.sleep(max(0.0, started + (second_tenth + 1) / 10 - loop.time()))
            await bank.close()
            return answers, switch.core.admission.shed_total

    try:
        answers, shed = asyncio.run(scenario())
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    assert len(answers) == 1000 and {a["39"] for a in answers} == {"91"}
    no_link = [r for r in capture.records if "nothing sent" in getattr(r, "repeat", "") or
               "nothing sent" in r.getMessage()]
    assert 1 <= len(no_link) <= 3, [r.getMessage() for r in no_link]
    assert len(capture.records) < 30, [r.getMessage() for r in capture.records]
    handler.close()
    summaries = [r for r in capture.records if getattr(r, "repeated", 0)]
    # Every top-up that reached the operator step is in the first line or a summary (none shed in tests).
    assert shed == 0
    assert sum(r.repeated for r in summaries if "nothing sent" in r.getMessage()) == 999
