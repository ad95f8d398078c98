"""The console's pure pieces without a browser: the dashboard chart's geometry and the plain-language
explanation of a transaction (the browser tests in test_console_browser.py drive the pages)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from zoneinfo import ZoneInfo

from switch.admin.console import _nice, chart, explain
from switch.journal import Outcome, PendingReversal, ThroughputRow

NOW = datetime(2026, 5, 9, 10, 31, 40, tzinfo=timezone.utc)
UTC = ZoneInfo("UTC")
SWITCH = SimpleNamespace(config=SimpleNamespace(
    operators=[SimpleNamespace(id="MCI", name="MCI"), SimpleNamespace(id="IRANCELL", name="Irancell")],
    acquirers=[]))


def test_chart_scale_is_a_round_number_above_the_busiest_minute():
    assert [_nice(n) for n in (0, 1, 3, 7, 10, 11, 180, 2500)] == [1, 1, 5, 10, 10, 20, 200, 5000]


def test_chart_draws_a_bar_a_minute_approved_below_and_the_rate_line_for_the_last_hour_only():
    minute = NOW.replace(second=0)
    rows = [ThroughputRow(minute - timedelta(minutes=2), "MCI", 100, 90),
            ThroughputRow(minute, "MCI", 50, 50),
            ThroughputRow(minute - timedelta(minutes=60), "MCI", 999, 0),   # before the window: not drawn
            ThroughputRow(minute, "IRANCELL", 7, 0)]
    drawn = chart(rows, "MCI", NOW, UTC)
    assert (drawn["total"], drawn["approved"], drawn["scale"], drawn["summary"]) == (150, 140, 100, "150 top-ups")
    assert len(drawn["bars"]) == 2 and len(drawn["rate"].split()) == 2
    first, last = drawn["bars"]
    bottom = drawn["top"] + drawn["height"]
    assert first["approved_y"] + first["approved_h"] == bottom and first["other_y"] + first["other_h"] == \
        first["approved_y"]
    assert first["approved_h"] == 0.9 * drawn["height"] and last["other_h"] == 0
    assert last["x"] > first["x"] and last["x"] + last["w"] <= drawn["left"] + drawn["width"]
    assert [t["label"] for t in drawn["ticks"]] == ["09:32", "09:47", "10:02", "10:17", "10:32"]
    assert chart([], "RIGHTEL", NOW, UTC)["rate_percent"] is None


def _view(**fields):
    base = dict(txn_id="t1", received_at=NOW, routed_operator="IRANCELL", operator_sent_at=NOW, operator_id=None)
    return SimpleNamespace(**{**base, **fields})


def _outcome(seconds: float, state: str, code: str, event: str = "end", **fields) -> Outcome:
    values = dict(operator_id="IRANCELL", operator_ref=None, approval_code=None, operator_code=None)
    values.update(fields)
    return Outcome("t1", NOW + timedelta(seconds=seconds), state, code, latency_ms=1.0, event=event, **values)


def test_explanation_of_an_unanswered_top_up_that_was_reversed_names_the_operator_the_91_and_the_time():
    outcomes = [_outcome(0.5, "unknown", "91"), _outcome(7.2, "reversed", "91", "reversal_done", operator_code="00")]
    said = explain(SWITCH, _view(state="reversed"), outcomes, None, ZoneInfo("Asia/Tehran"))
    assert said == ["No answer from Irancell: the bank got 91 at 14:01:40, and a reversal was stored so the "
                    "operator undoes it if it did credit.",
                    "The top-up was reversed at 14:01:47 (Irancell answered the reversal)."]


def test_explanation_of_an_approval_gives_the_reference_and_of_a_pending_reversal_its_attempts():
    approved = [_outcome(0.2, "approved", "00", operator_id="MCI", operator_ref="R-77", approval_code="123456")]
    assert explain(SWITCH, _view(), approved, None, UTC) == [
        "Approved by MCI at 10:31:40, reference R-77 (approval code 123456): the bank got 00 and the subscriber "
        "was credited."]
    reversal = PendingReversal("t1", "IRANCELL", "unknown_outcome", "pending", 1, NOW, NOW + timedelta(seconds=30),
                               "no answer", "603799", "ABC", "989361110005", 100000, "364", "000001", NOW)
    said = explain(SWITCH, _view(), [_outcome(1, "unknown", "91")], reversal, UTC)
    assert said[-1] == "The reversal is being sent to Irancell: 1 attempt so far, the next at 10:32:10."
    assert explain(SWITCH, _view(), [], None, UTC) == ["Sent to Irancell at 10:31:40; no answer yet (in flight)."]
    refused = [_outcome(0, "refused", "30", operator_id=None)]
    assert explain(SWITCH, _view(routed_operator=None), refused, None, UTC) == [
        "Refused by the switch at 10:31:40: the bank got 30, a field missing or malformed. No operator saw it."]
