"""The call-center console in a real headless Chromium (Playwright for Python driving the Debian
`chromium` package) against a running switch with its admin server, operator simulators and a real
Postgres journal: log in with a token, search, a transaction's timeline and explanation, resolve
by role, every page reachable from the dashboard.

Each page is saved as a screenshot under the test's tmp_path and copied to /tmp/console-shots/
(SHOTS) for a person to look at. Without chromium (or playwright) the tests skip, and fail in CI.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from simulators.operator import OperatorBehaviour
from support import BankClient, eventually, postgres_journal, running_switch, top_up
from switch.admin.auth import hash_token

CHROMIUM = os.environ.get("AIRSWITCH_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]
VIEWPORT = {"width": 1366, "height": 768}   # a laptop screen
SHOTS = Path("/tmp/console-shots")
PAGE_TIMEOUT_MS = 10_000

VIEWER_TOKEN = "viewer-token-for-console-tests"
OPERATOR_TOKEN = "operator-token-for-console-tests"
ADMIN = {"host": "127.0.0.1", "port": 0, "users": [
    {"name": "callcenter-sara", "role": "viewer", "token_hash": hash_token(VIEWER_TOKEN)},
    {"name": "ops-anna", "role": "operator", "token_hash": hash_token(OPERATOR_TOKEN)},
]}
OPERATOR_TIMEOUT = 0.3
FAST_REVERSALS = {"max_attempts": 4, "backoff_start": 0.1, "backoff_max": 0.2, "poll_interval": 0.1,
                  "orphan_age": 60.0}


@pytest.fixture
def chromium() -> str:
    """The Chromium binary, with playwright importable; skip (fail in CI) without them."""
    reason = None
    try:
        import playwright.async_api  # noqa: F401
    except ImportError as exc:
        reason = f"playwright is not installed: {exc}"
    if reason is None and not os.path.exists(CHROMIUM):
        reason = f"no Chromium at {CHROMIUM} (apt-get install chromium, or set AIRSWITCH_CHROMIUM)"
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return CHROMIUM


@pytest.fixture
def journal(pg_dsn, pg_schema):
    return lambda: postgres_journal(pg_dsn, pg_schema)


class Shots:
    """Full-page screenshots under tmp_path, copied to SHOTS."""

    def __init__(self, directory: Path, prefix: str):
        self.directory, self.prefix = directory, prefix
        SHOTS.mkdir(parents=True, exist_ok=True)

    async def take(self, page, name: str) -> Path:
        path = self.directory / f"{self.prefix}-{name}.png"
        await page.screenshot(path=str(path), full_page=True)
        shutil.copy(path, SHOTS / path.name)
        return path


async def browser_session(chromium_path: str):
    from playwright.async_api import async_playwright
    playwright = await async_playwright().start()
    browser = await playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
    return playwright, browser


async def new_page(browser):
    context = await browser.new_context(viewport=VIEWPORT)
    page = await context.new_page()
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    return context, page


async def log_in(page, base: str, token: str) -> None:
    await page.goto(f"{base}/console/")
    assert page.url.startswith(f"{base}/console/login"), "without a cookie the console asks for a token"
    await page.fill("#token", token)
    await page.click("button[type=submit] >> text=Log in")
    await page.wait_for_url(f"{base}/console/")


async def send(switch, msisdn: str, stan: str) -> dict:
    bank = await BankClient.connect(switch.port)
    try:
        request = top_up(stan, msisdn=msisdn)
        answer = await bank.request(request)
    finally:
        await bank.close()
    return {"request": request, "answer": answer}


def test_console_login_search_by_national_msisdn_timeline_explanation_and_every_page_from_the_dashboard(
        journal, chromium, tmp_path):
    async def scenario():
        held = OperatorBehaviour(latency_ms=1, hold_top_ups="answer")   # IRANCELL credits, answers too late
        async with running_switch(journal(), {"IRANCELL": held}, admin=ADMIN, operator_timeout=OPERATOR_TIMEOUT,
                                  reversals=FAST_REVERSALS) as switch:
            approved = await send(switch, "09121110002", "000001")
            assert approved["answer"]["39"] == "00"
            no_answer = await send(switch, "09361110005", "000002")
            assert no_answer["answer"]["39"] == "91"

            async def reversed_():
                view = await switch.journal.find_latest(no_answer["request"]["32"], no_answer["request"]["37"])
                return view if view is not None and view.state == "reversed" else None
            late = await eventually(reversed_, "the unanswered IRANCELL top-up reversed")
            assert switch.simulators["IRANCELL"].release_held() == 1      # its approval, after all that

            async def late_recorded():
                return "late_answer" in [row[2] for row in await switch.journal.history(late.txn_id)] \
                    and not switch.late_answers.pending
            await eventually(late_recorded, "the late answer recorded")

            base = f"http://127.0.0.1:{switch.admin.port}"
            shots = Shots(tmp_path, "viewer")
            playwright, browser = await browser_session(chromium)
            try:
                context, page = await new_page(browser)
                await page.goto(f"{base}/console/")
                await shots.take(page, "01-login")
                await log_in(page, base, VIEWER_TOKEN)
                cookie = [c for c in await context.cookies() if c["name"] == "airswitch_console"][0]
                assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
                assert "callcenter-sara" in await page.inner_text("header")

                # The dashboard: a chart per operator, the newest transactions, links to every page.
                assert await page.locator("figure.chart svg").count() == 3
                assert "1 top-up, 100.0% approved" in await page.inner_text("#chart-MCI figcaption")
                assert await page.locator("#chart-MCI rect.approved").count() == 1
                assert "0.0% approved" in await page.inner_text("#chart-IRANCELL figcaption")
                assert await page.locator("table.list a.txn-link").count() == 2
                await shots.take(page, "02-dashboard")

                await page.click("#nav-links")
                await page.wait_for_url(f"{base}/console/links")
                operators = await page.inner_text("#operators")
                for name in ("MCI", "IRANCELL", "RIGHTEL"):
                    assert name in operators
                assert operators.count("up") >= 3 and "down" not in operators
                assert await page.locator("#reload-button").count() == 0, "a viewer gets no reload button"
                await shots.take(page, "03-links")

                await page.click("#nav-reversals")
                await page.wait_for_url(f"{base}/console/reversals")
                assert "Need a person (0)" in await page.inner_text("main")
                await shots.take(page, "04-reversals")

                await page.click("#nav-dashboard")
                await page.click("#tile-search")
                await page.wait_for_url(f"{base}/console/search")
                await shots.take(page, "05-search-empty")

                # Search by the national form of the number: the top-up just sent, stored as 98...
                await page.fill("#search-box", "0912 111 0002")
                await page.press("#search-box", "Enter")
                await page.wait_for_url("**/console/search?q=*")
                results = page.locator("table.list tbody tr")
                assert await results.count() == 1
                row = await results.first.inner_text()
                assert "989121110002" in row and "approved" in row and approved["request"]["37"] in row
                await shots.take(page, "06-search-msisdn")

                await page.click("table.list a.txn-link")
                await page.wait_for_url("**/console/transactions/*")
                explanation = await page.inner_text("#explanation")
                assert "Approved by MCI at" in explanation and "the bank got 00" in explanation
                timeline = await page.inner_text("#timeline")
                for step in ("Request received", "Sent to MCI", "Outcome: approved", "603799******7890"):
                    assert step in timeline, step
                body = await page.inner_text("body")
                assert "6037991234567890" not in body, "the card number is never shown whole"
                await shots.take(page, "07-transaction-approved")

                # By tracking code: the IRANCELL top-up that got no answer, was reversed, then answered late.
                await page.fill("#search-box", no_answer["request"]["37"])
                await page.press("#search-box", "Enter")
                await page.wait_for_url("**/console/search?q=*")
                await page.click("table.list a.txn-link")
                await page.wait_for_url(f"**/console/transactions/{late.txn_id}")
                explanation = await page.inner_text("#explanation")
                assert "No answer from IRANCELL: the bank got 91 at" in explanation
                assert "The top-up was reversed at" in explanation and "answered late" in explanation
                timeline = await page.inner_text("#timeline")
                for step in ("Outcome: unknown (no answer in time)", "Reversal stored for IRANCELL", "Reversal confirmed by IRANCELL",
                             "Late answer from IRANCELL"):
                    assert step in timeline, step
                assert await page.inner_text("#txn-state") == "reversed"
                await shots.take(page, "08-transaction-reversed")

                # By transaction id: straight to its page. Unknown input: a plain "nothing found".
                await page.fill("#search-box", late.txn_id)
                await page.press("#search-box", "Enter")
                await page.wait_for_url(f"**/console/transactions/{late.txn_id}")
                await page.fill("#search-box", "no such thing!")
                await page.press("#search-box", "Enter")
                await page.wait_for_selector("#no-results")
                await shots.take(page, "09-search-nothing")

                await page.click("button >> text=Log out")
                await page.wait_for_url("**/console/login*")
                await page.goto(f"{base}/console/reversals")
                assert "/console/login" in page.url, "logged out: back to the login page"
                await context.close()
            finally:
                await browser.close()
                await playwright.stop()
    asyncio.run(scenario())


def test_console_refuses_a_wrong_token_with_a_clear_message(journal, chromium, tmp_path):
    async def scenario():
        async with running_switch(journal(), admin=ADMIN) as switch:
            base = f"http://127.0.0.1:{switch.admin.port}"
            playwright, browser = await browser_session(chromium)
            try:
                context, page = await new_page(browser)
                await page.goto(f"{base}/console/transactions/abc")
                assert "/console/login" in page.url
                await page.fill("#token", "not-a-token")
                async with page.expect_response(lambda r: r.request.method == "POST") as posted:
                    await page.click("button[type=submit] >> text=Log in")
                assert (await posted.value).status == 401
                message = await page.inner_text("#login-error")
                assert "not known to this switch" in message
                assert not [c for c in await context.cookies() if c["name"] == "airswitch_console"]
                await Shots(tmp_path, "wrong").take(page, "10-login-wrong-token")
                await page.goto(f"{base}/console/")
                assert "/console/login" in page.url
                await context.close()
            finally:
                await browser.close()
                await playwright.stop()
    asyncio.run(scenario())


def test_console_resolve_works_for_an_operator_and_is_refused_for_a_viewer(journal, chromium, tmp_path):
    async def scenario():
        silent = OperatorBehaviour(latency_ms=1, no_answer_rate=1.0)
        async with running_switch(journal(), {"MCI": silent}, operator_timeout=OPERATOR_TIMEOUT, admin=ADMIN,
                                  reversals={"max_attempts": 1, "orphan_age": 60.0}) as switch:
            sent = await send(switch, "09121110004", "000001")
            assert sent["answer"]["39"] == "91"
            view = await switch.journal.find_latest(sent["request"]["32"], sent["request"]["37"])
            await switch.simulators["MCI"].stop()   # the reversal cannot be sent: one attempt, then failed

            async def failed():
                owed = await switch.journal.reversal(view.txn_id)
                return owed is not None and owed.state == "failed"
            await eventually(failed, "the reversal failed after its one attempt")

            base = f"http://127.0.0.1:{switch.admin.port}"
            playwright, browser = await browser_session(chromium)
            try:
                # A viewer sees the failed reversal without a resolve button; a POST anyway is 403.
                context, page = await new_page(browser)
                await log_in(page, base, VIEWER_TOKEN)
                assert "1" in await page.inner_text("#tile-reversals .big")
                await page.click("#tile-reversals")
                await page.wait_for_url(f"{base}/console/reversals")
                failed_rows = await page.inner_text("#failed")
                assert "989121110004" in failed_rows and "no answer from the operator" in failed_rows
                assert await page.locator("#failed button").count() == 0
                await Shots(tmp_path, "viewer").take(page, "11-reversals-viewer")
                refused = await context.request.post(f"{base}/console/reversals/{view.txn_id}/resolve",
                                                     form={"note": "a viewer trying"})
                assert refused.status == 403 and "needs the operator role" in await refused.text()
                await page.click("#failed a.txn-link")
                await page.wait_for_url(f"**/console/transactions/{view.txn_id}")
                assert await page.locator("#resolve-button").count() == 0
                assert "a person must settle it with MCI" in await page.inner_text("#explanation")
                await Shots(tmp_path, "viewer").take(page, "12-transaction-failed-viewer")
                await context.close()
                assert (await switch.journal.reversal(view.txn_id)).state == "failed"

                # An operator resolves it from the queue; the note carries the user.
                context, page = await new_page(browser)
                await log_in(page, base, OPERATOR_TOKEN)
                await page.click("#nav-reversals")
                await page.wait_for_url(f"{base}/console/reversals")
                # A cross-site post is refused even with the cookie (SameSite=Strict keeps it off in a browser).
                forged = await context.request.post(f"{base}/console/reversals/{view.txn_id}/resolve",
                                                    form={"note": "forged"}, headers={"Origin": "http://evil.test"})
                assert forged.status == 403
                no_note = await context.request.post(f"{base}/console/reversals/{view.txn_id}/resolve",
                                                     form={"note": " "})
                assert no_note.status == 400 and "Say how it was settled" in await no_note.text()
                await Shots(tmp_path, "operator").take(page, "13-reversals-operator")
                await page.fill("#failed input[name=note]", "settled with MCI, ticket 4711")
                await page.click("#failed button")
                await page.wait_for_url(f"{base}/console/reversals?msg=resolved")
                assert "The reversal is resolved" in await page.inner_text(".notice")
                assert "Need a person (0)" in await page.inner_text("main")
                await Shots(tmp_path, "operator").take(page, "14-reversals-resolved")
                await page.goto(f"{base}/console/transactions/{view.txn_id}")
                assert await page.inner_text("#txn-state") == "resolved"
                explanation = await page.inner_text("#explanation")
                assert "Settled by hand at" in explanation and "ticket 4711" in explanation \
                    and "ops-anna" in explanation
                assert "Resolved by hand" in await page.inner_text("#timeline")
                await Shots(tmp_path, "operator").take(page, "15-transaction-resolved")
                # The operator also sees the reload button on the links page.
                await page.click("#nav-links")
                assert await page.locator("#reload-button").count() == 1
                await context.close()
            finally:
                await browser.close()
                await playwright.stop()
            owed = await switch.journal.reversal(view.txn_id)
            assert owed.state == "resolved" and "ops-anna" in owed.last_error
    asyncio.run(scenario())
