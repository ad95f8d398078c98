"""The admin server over real HTTP (httpx on 127.0.0.1, port 0) inside a running switch with operator
simulators and a real Postgres journal: health, readiness, metrics (read by prometheus-client's own
parser), the JSON API and its tokens and roles."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from simulators.operator import OperatorBehaviour
from support import BankClient, eventually, postgres_journal, running_switch, top_up
from switch.admin.auth import hash_token

VIEWER_TOKEN = "viewer-token-for-tests"
OPERATOR_TOKEN = "operator-token-for-tests"
ADMIN = {"host": "127.0.0.1", "port": 0, "users": [
    {"name": "callcenter", "role": "viewer", "token_hash": hash_token(VIEWER_TOKEN)},
    {"name": "ops-anna", "role": "operator", "token_hash": hash_token(OPERATOR_TOKEN)},
]}


def run(coroutine):
    return asyncio.run(coroutine)


@pytest.fixture
def journal(pg_dsn, pg_schema):
    return lambda: postgres_journal(pg_dsn, pg_schema)


def client(switch, token: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{switch.admin.port}", headers=headers, timeout=10.0)


def samples(text: str) -> dict[tuple, float]:
    """Every sample of a Prometheus text page, by (name, sorted labels)."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_healthz_and_readyz_answer_then_an_operator_down_makes_readyz_503_with_the_reason(journal):
    async def scenario():
        async with running_switch(journal(), admin=ADMIN) as switch, client(switch) as http:
            assert (await http.get("/healthz")).status_code == 200
            ready = await http.get("/readyz")
            assert ready.status_code == 200 and ready.json() == {"ready": True, "reasons": []}
            await switch.simulators["IRANCELL"].stop()

            async def not_ready():
                answer = await http.get("/readyz")
                return answer if answer.status_code == 503 else None
            answer = await eventually(not_ready, "readyz answered 503 with IRANCELL down")
            assert answer.json()["reasons"] == ["operator IRANCELL: no live link"]
            assert (await http.get("/healthz")).status_code == 200
    run(scenario())


def test_metrics_parse_and_count_a_top_up_with_bounded_labels(journal):
    async def scenario():
        async with running_switch(journal(), admin=ADMIN) as switch, client(switch) as http:
            before = await http.get("/metrics")
            assert before.status_code == 200 and before.headers["content-type"].startswith("text/plain")
            bank = await BankClient.connect(switch.port)
            assert (await bank.request(top_up("000001", msisdn="09121110001")))["39"] == "00"
            await bank.close()
            return before.text, (await http.get("/metrics")).text

    before, after = run(scenario())
    old, new = samples(before), samples(after)
    approved = ("airswitch_requests_total", (("acquirer", "603799"), ("channel", "bank87"), ("kind", "top_up"),
                                             ("operator", "MCI"), ("response_code", "00")))
    assert old.get(approved, 0) == 0 and new[approved] == 1
    duration = ("airswitch_request_duration_seconds_count", (("channel", "bank87"),))
    assert new[duration] == old.get(duration, 0) + 1
    assert new[("airswitch_operator_round_trip_seconds_count", (("operator", "MCI"),))] == 1
    assert new[("airswitch_journal_commit_duration_seconds_count", ())] >= 2     # intake, outcome
    assert new[("airswitch_journal_batches_total", ())] > old[("airswitch_journal_batches_total", ())]
    for operator in ("MCI", "IRANCELL", "RIGHTEL"):
        assert new[("airswitch_operator_up", (("operator", operator),))] == 1
    assert new[("airswitch_in_flight_requests", ())] == 0
    assert new[("airswitch_journal_spilling", ())] == 0 and new[("airswitch_journal_readable", ())] == 1
    assert new[("airswitch_dedupe_window_keys", ())] == 1
    # No MSISDN or tracking code ever becomes a label.
    assert "9121110001" not in after and all(len(value) < 12 for (_, labels) in new for _, value in labels)


def test_api_finds_the_top_up_by_national_msisdn_and_shows_its_timeline(journal):
    async def scenario():
        async with running_switch(journal(), admin=ADMIN) as switch, client(switch, VIEWER_TOKEN) as http:
            bank = await BankClient.connect(switch.port)
            request = top_up("000001", msisdn="09121110002")
            assert (await bank.request(request))["39"] == "00"
            await bank.close()
            found = await http.get("/api/transactions", params={"msisdn": "09121110002"})
            assert found.status_code == 200
            items = found.json()["items"]
            assert [(t["tracking_code"], t["msisdn"], t["state"]) for t in items] == \
                [(request["37"], "989121110002", "approved")]
            assert items[0]["card_masked"] == "603799******7890"
            same = await http.get("/api/transactions", params={"msisdn": "+989121110002", "acquirer": "603799",
                                                               "state": "approved"})
            assert [t["txn_id"] for t in same.json()["items"]] == [items[0]["txn_id"]]
            by_code = await http.get("/api/transactions", params={"tracking_code": request["37"]})
            assert [t["txn_id"] for t in by_code.json()["items"]] == [items[0]["txn_id"]]
            detail = (await http.get(f"/api/transactions/{items[0]['txn_id']}")).json()
            assert [e["what"] for e in detail["timeline"]] == ["intake", "routed", "outcome"]
            end = detail["timeline"][-1]
            assert (end["event"], end["state"], end["response_code"], end["operator"]) == ("end", "approved", "00",
                                                                                           "MCI")
            assert detail["reversal"] is None
            assert (await http.get("/api/transactions/nosuchtxn")).status_code == 404
            assert (await http.get("/api/transactions", params={"msisdn": "12x"})).status_code == 400
            links = (await http.get("/api/links")).json()["operators"]
            assert {(o["id"], o["up"], o["routed"]) for o in links} == \
                {("MCI", True, True), ("IRANCELL", True, True), ("RIGHTEL", True, True)}
    run(scenario())


def test_paging_returns_every_transaction_once(journal):
    async def scenario():
        async with running_switch(journal(), admin=ADMIN) as switch, client(switch, VIEWER_TOKEN) as http:
            bank = await BankClient.connect(switch.port)
            for stan in range(1, 6):
                await bank.request(top_up(f"{stan:06d}", msisdn="09121110003"))
            await bank.close()
            seen, cursor = [], None
            while True:
                params = {"msisdn": "9121110003", "limit": "2", **({"cursor": cursor} if cursor else {})}
                page = (await http.get("/api/transactions", params=params)).json()
                seen += [t["txn_id"] for t in page["items"]]
                cursor = page["next_cursor"]
                if cursor is None:
                    break
            assert len(seen) == len(set(seen)) == 5
    run(scenario())


def test_resolve_works_for_an_operator_and_is_refused_for_a_viewer_and_a_wrong_token(journal, caplog):
    async def scenario():
        behaviours = {"MCI": OperatorBehaviour(latency_ms=1, no_answer_rate=1.0)}
        async with running_switch(journal(), behaviours, operator_timeout=0.3, admin=ADMIN,
                                  reversals={"max_attempts": 1, "orphan_age": 60.0}) as switch:
            bank = await BankClient.connect(switch.port)
            request = top_up("000001", msisdn="09121110004")
            assert (await bank.request(request))["39"] == "91"
            await bank.close()
            view = await switch.journal.find_latest(request["32"], request["37"])

            async def failed():
                owed = await switch.journal.reversal(view.txn_id)
                return owed is not None and owed.state == "failed"
            await switch.simulators["MCI"].stop()   # the reversal cannot be sent: one attempt, then failed
            await eventually(failed, "the reversal failed after its one attempt")
            path = f"/api/reversals/{view.txn_id}/resolve"
            body = {"note": "settled with MCI, ticket 4711"}
            async with client(switch) as anonymous, client(switch, "not-a-token") as wrong, \
                    client(switch, VIEWER_TOKEN) as viewer, client(switch, OPERATOR_TOKEN) as operator:
                assert (await anonymous.get("/api/reversals")).status_code == 401
                refused = await wrong.post(path, json=body)
                assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
                queue = (await viewer.get("/api/reversals")).json()["items"]
                assert [(r["txn_id"], r["state"]) for r in queue] == [(view.txn_id, "failed")]
                assert (await viewer.post(path, json=body)).status_code == 403
                assert (await viewer.post("/api/reload")).status_code == 403
                with caplog.at_level(logging.WARNING, logger="airswitch.admin"):
                    resolved = await operator.post(path, json=body)
                assert resolved.status_code == 200 and resolved.json()["reversal"]["state"] == "resolved"
                assert (await operator.post(path, json=body)).status_code == 409
                detail = (await viewer.get(f"/api/transactions/{view.txn_id}")).json()
                assert detail["transaction"]["state"] == "resolved"
                resolution = [e for e in detail["timeline"] if e.get("event") == "manual_resolution"]
                assert resolution and "ops-anna" in resolution[0]["note"] and "4711" in resolution[0]["note"]
                assert [e["event"] for e in detail["timeline"] if e["what"] == "outcome"] == \
                    ["end", "reversal_failed", "manual_resolution"]
                # The switch's reload itself is tested in test_reload_e2e; here, that the API calls it.
                outcomes = [True, False]

                async def reload():
                    return outcomes.pop(0)
                switch.reload = reload
                with caplog.at_level(logging.WARNING, logger="airswitch.admin"):
                    reloaded = await operator.post("/api/reload")
                assert reloaded.status_code == 200 and reloaded.json()["reloaded"] is True
                refused = await operator.post("/api/reload")
                assert refused.status_code == 422 and refused.json()["reloaded"] is False
                # Every change is journaled with who made it, newest first.
                events = [(e.actor, e.action) for e in await switch.journal.admin_events()]
                assert events == [("ops-anna", "reload"), ("ops-anna", "reload"), ("ops-anna", "resolve")]
            assert any("ops-anna" in r.getMessage() and "resolved" in r.getMessage() for r in caplog.records)
            assert any("ops-anna" in r.getMessage() and "reload" in r.getMessage() for r in caplog.records)
    run(scenario())
