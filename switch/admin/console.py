"""The call-center console: server-rendered pages on the admin server, under /console/.

Pages (jinja2 templates in templates/, one stylesheet in static/, no JavaScript): log in with a
bearer token; the dashboard (top-ups and approval rate per operator over the last hour, the
newest transactions, the reversal queue at a glance); search by MSISDN in any accepted form,
tracking code or transaction id; a transaction's page (its timeline and what happened, in plain
words); the operator links; the reversal queue with resolve. The data comes from the same journal
and ledger reads as the JSON API (api.py); the users and roles are the API's (auth.py).

The token is kept in a cookie (HttpOnly, SameSite=Strict, path /console): each request is
authenticated afresh, so a user removed by a reload is out at once. SameSite=Strict keeps other
sites' pages from posting with it; a POST whose Origin is another site is refused as well.
"""

from __future__ import annotations

import logging
import re
import time
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, quote
from zoneinfo import ZoneInfo

import jinja2
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from routing import InvalidMsisdn, normalise_msisdn
from switch.admin.api import ask_reload, resolve_by_hand, timeline, transaction_record
from switch.admin.auth import may, user_of
from switch.app.config import AdminUser
from switch.clock import utcnow
from switch.journal import JournalError, TransactionQuery

log = logging.getLogger("airswitch.admin")

PREFIX = "/console"
COOKIE = "airswitch_console"
COOKIE_MAX_AGE = 12 * 3600          # seconds: one shift, then the token is pasted again
FORM_MAX = 16 * 1024                # bytes of a posted form
SEARCH_LIMIT = 50                   # results a page
RECENT = 10                         # newest transactions on the dashboard
REVERSALS_SHOWN = 500
CHART_WINDOW = timedelta(hours=1)
CHART_MINUTES = 60
CHART_CACHE_SECONDS = 10.0          # the dashboard's journal read is reused this long (reloads are cheap)
LIVE_WINDOW = timedelta(minutes=5)  # the links page's throughput
TXN_ID = re.compile(r"[0-9a-f]{32}")
TRACKING_CODE = re.compile(r"[0-9A-Za-z]{1,12}")   # field 37, an12

HERE = Path(__file__).resolve().parent

# What the bank's field 39 means, in the words the call center uses (INTERFACES.md 1.6).
CODE_WORDS = {
    "00": "approved", "05": "declined by the operator", "12": "not a transaction the switch takes",
    "13": "an amount the operator does not take", "14": "not a valid number, or unknown at the operator",
    "25": "original not found", "30": "a field missing or malformed", "51": "not enough prepaid float",
    "57": "not permitted for this bank or subscriber", "61": "over the bank's amount limit",
    "63": "security check (MAC) failed", "65": "too many top-ups to this number",
    "91": "operator unavailable or no answer in time", "92": "no operator serves this number",
    "94": "duplicate of an earlier request", "95": "totals differ", "96": "switch malfunction",
}
REASONS = {"unknown_outcome": "no answer from the operator", "acquirer_reversal": "the bank asked to reverse it",
           "crash_recovery": "found unfinished after a restart"}
CURRENCIES = {"364": "IRR"}
MESSAGES = {"resolved": "The reversal is resolved; the transaction page shows the note.",
            "reloaded": "The configuration was reloaded.",
            "reload_asked": "Every worker was asked to reload; their logs say the result.",
            "reload_refused": "The configuration does not validate; the running one stays (the log says why).",
            "logged_out": "You are logged out."}


# -- the app -----------------------------------------------------------------------------

def console_app(admin) -> Starlette:
    """The console, to be mounted at PREFIX on the admin app. `admin` is the AdminServer."""
    app = Starlette(routes=[
        Route("/", dashboard),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/search", search),
        Route("/transactions/{txn_id}", transaction),
        Route("/links", links),
        Route("/reload", reload, methods=["POST"]),
        Route("/reversals", reversals),
        Route("/reversals/{txn_id}/resolve", resolve, methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ], exception_handlers={HTTPException: _error_page})
    app.state.admin = admin
    app.state.chart = (0.0, [])   # (monotonic time read, rows)
    return app


def mount(admin) -> Mount:
    """The one route the admin app adds for the console."""
    return Mount(PREFIX, app=console_app(admin))


_templates = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                                undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def _render(request: Request, template: str, status: int = 200, **context) -> HTMLResponse:
    switch = request.app.state.admin.switch
    zone = _zone(switch)
    env = {"prefix": PREFIX, "user": getattr(request.state, "user", None), "zone": zone.key,
           "message": MESSAGES.get(request.query_params.get("msg", "")), "may_operate": False,
           "time": lambda at: _local(at, zone).strftime("%H:%M:%S") if at else "",
           "datetime": lambda at: _local(at, zone).strftime("%Y-%m-%d %H:%M:%S") if at else "",
           "amount": _amount, "operator_name": lambda op: _operator_name(switch, op),
           "acquirer_name": lambda acq: _acquirer_name(switch, acq), "code_words": CODE_WORDS,
           "reasons": REASONS, "query": ""}
    user = env["user"]
    env["may_operate"] = user is not None and may(user, "operator")
    env.update(context)
    return HTMLResponse(_templates.get_template(template).render(env), status_code=status)


async def _error_page(request: Request, exc: HTTPException) -> Response:
    titles = {401: "Log in first", 403: "Not allowed", 404: "Not found", 503: "The journal is not answering"}
    return _render(request, "error.html", exc.status_code, title=titles.get(exc.status_code, "Error"),
                   detail=exc.detail)


# -- who is asking -------------------------------------------------------------------------

def _user(request: Request) -> AdminUser | None:
    token = request.cookies.get(COOKIE)
    if not token:
        return None
    return user_of(f"Bearer {token}", request.app.state.admin.switch.config.admin.users)


def _require(request: Request, role: str, doing: str) -> AdminUser | Response:
    """The request's user if it may act as `role`; a redirect to the login page without one; 403 below it."""
    user = _user(request)
    if user is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"{PREFIX}/login?next={quote(target)}", 303)
    request.state.user = user
    if not may(user, role):
        raise HTTPException(403, f"{user.name} ({user.role}) may not {doing}: that needs the {role} role.")
    return user


def _same_origin(request: Request) -> None:
    # SameSite=Strict already keeps the cookie off other sites' posts; this refuses them outright.
    origin = request.headers.get("origin")
    if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
        raise HTTPException(403, "This form was posted from another site.")


async def _form(request: Request) -> dict[str, str]:
    body = await request.body()
    if len(body) > FORM_MAX:
        raise HTTPException(413, "The form is too large.")
    return {key: values[0] for key, values in parse_qs(body.decode("utf-8", "replace")).items()}


async def _journal(call):
    try:
        return await call
    except JournalError as exc:
        raise HTTPException(503, f"The journal did not answer: {exc}. Try again in a moment.") from None


# -- pages -------------------------------------------------------------------------------------

async def login(request: Request) -> Response:
    """GET: the form. POST token=...: a known token gets the cookie and goes on; another is refused."""
    target = request.query_params.get("next", "")
    if not target.startswith(PREFIX + "/") or target.startswith("//"):
        target = PREFIX + "/"
    if request.method == "GET":
        return _render(request, "login.html", next=target, error=None)
    _same_origin(request)
    token = (await _form(request)).get("token", "").strip()
    user = user_of(f"Bearer {token}", request.app.state.admin.switch.config.admin.users) if token else None
    if user is None:
        log.info("console: a log-in with an unknown token was refused (from %s)",
                 request.client.host if request.client else "?")
        error = ("That token is not known to this switch. Paste the whole token you were given "
                 "(not its sha256 hash); ask an operator for a new one if it still fails.") if token else \
            "Paste your token first."
        return _render(request, "login.html", 401, next=target, error=error)
    log.info("console: %s (%s) logged in", user.name, user.role)
    response = RedirectResponse(target, 303)
    response.set_cookie(COOKIE, token, max_age=COOKIE_MAX_AGE, path=PREFIX, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")
    return response


async def logout(request: Request) -> Response:
    _same_origin(request)
    response = RedirectResponse(f"{PREFIX}/login?msg=logged_out", 303)
    response.delete_cookie(COOKIE, path=PREFIX, httponly=True, samesite="strict")
    return response


async def dashboard(request: Request) -> Response:
    user = _require(request, "viewer", "read")
    if isinstance(user, Response):
        return user
    switch = request.app.state.admin.switch
    now = utcnow()
    rows = await _chart_rows(request, now)
    recent = await _journal(switch.journal.search(TransactionQuery(), RECENT))
    queue = await _journal(switch.journal.reversal_queue())
    operators = list(dict.fromkeys([*(op.id for op in switch.config.operators),
                                    *sorted(row.operator_id for row in rows)]))
    charts = [chart(rows, operator, now, _zone(switch)) for operator in operators]
    return _render(request, "dashboard.html", charts=charts, recent=recent, queue=queue,
                   failed=sum(row.count for row in queue if row.state == "failed"),
                   pending=sum(row.count for row in queue if row.state == "pending"),
                   links=_link_states(switch))


async def _chart_rows(request: Request, now: datetime) -> list:
    read_at, rows = request.app.state.chart
    if time.monotonic() - read_at > CHART_CACHE_SECONDS:
        since = _minute(now) - CHART_WINDOW + timedelta(minutes=1)   # the chart's first minute
        rows = await _journal(request.app.state.admin.switch.journal.throughput(since))
        request.app.state.chart = (time.monotonic(), rows)
    return rows


async def search(request: Request) -> Response:
    """?q= an MSISDN (any accepted form), a tracking code or a transaction id; &cursor= continues an MSISDN."""
    user = _require(request, "viewer", "search")
    if isinstance(user, Response):
        return user
    switch = request.app.state.admin.switch
    typed = request.query_params.get("q", "").strip()
    if not typed:
        return _render(request, "search.html", query="", understood=[], results=[], next_cursor=None)
    understood, results = [], {}
    if TXN_ID.fullmatch(typed.lower()):
        found = await _journal(switch.journal.transaction(typed.lower()))
        if found is not None:
            return RedirectResponse(f"{PREFIX}/transactions/{found.txn_id}", 303)
        understood.append(f"transaction id {typed.lower()}")
    next_cursor = None
    try:
        msisdn = normalise_msisdn(re.sub(r"[\s\-().]", "", typed), switch.config.admin.country)
    except (InvalidMsisdn, ValueError):
        msisdn = None
    if msisdn is not None:
        understood.append(f"mobile number {msisdn}")
        before = _cursor(request.query_params.get("cursor"))
        found = await _journal(switch.journal.search(TransactionQuery(msisdn=msisdn, before=before),
                                                     SEARCH_LIMIT + 1))
        if len(found) > SEARCH_LIMIT:
            found = found[:SEARCH_LIMIT]
            next_cursor = f"{found[-1].received_at.isoformat()}|{found[-1].txn_id}"
        results.update((view.txn_id, view) for view in found)
    if TRACKING_CODE.fullmatch(typed) and request.query_params.get("cursor") is None:
        understood.append(f"tracking code {typed}")
        for code in dict.fromkeys((typed, typed.upper())):
            found = await _journal(switch.journal.search(TransactionQuery(tracking_code=code), SEARCH_LIMIT))
            results.update((view.txn_id, view) for view in found)
    ordered = sorted(results.values(), key=lambda view: (view.received_at, view.txn_id), reverse=True)
    return _render(request, "search.html", query=typed, understood=understood, results=ordered,
                   next_cursor=next_cursor)


def _cursor(value: str | None) -> tuple[datetime, str] | None:
    if not value:
        return None
    at, _, txn_id = value.partition("|")
    try:
        return datetime.fromisoformat(at), txn_id
    except ValueError:
        raise HTTPException(400, "That page link is broken; search again.") from None


async def transaction(request: Request) -> Response:
    user = _require(request, "viewer", "read")
    if isinstance(user, Response):
        return user
    switch = request.app.state.admin.switch
    txn_id = request.path_params["txn_id"]
    try:
        record = await transaction_record(switch, txn_id)
    except HTTPException as exc:
        raise HTTPException(exc.status_code, f"The journal did not answer: {exc.detail}. Try again in a moment.")
    if record is None:
        raise HTTPException(404, f"There is no transaction {txn_id}.")
    view, outcomes, reversal = record.view, record.outcomes, record.reversal
    movements, float_error = record.movements, record.float_error
    zone = _zone(switch)
    events = [_timeline_row(switch, event, reversal) for event in timeline(view, outcomes, reversal, movements)]
    if reversal is not None:
        # Right after the row stored with it (one commit; their times differ by microseconds), else by time.
        stored_with = next((i for i, row in enumerate(events) if row.get("stores_reversal")), None)
        if stored_with is None:
            events.append(_reversal_row(switch, reversal))
            events.sort(key=lambda row: row["at"])
        else:
            events.insert(stored_with + 1, _reversal_row(switch, reversal))
    return _render(request, "transaction.html", txn=view, reversal=reversal, events=events,
                   float_error=float_error, explanation=explain(switch, view, outcomes, reversal, zone))


async def links(request: Request) -> Response:
    user = _require(request, "viewer", "read")
    if isinstance(user, Response):
        return user
    switch = request.app.state.admin.switch
    now = utcnow()
    rows = await _journal(switch.journal.throughput(_minute(now) - LIVE_WINDOW))
    last_minute = _minute(now) - timedelta(minutes=1)
    rates = {}
    for row in rows:
        total, approved, last = rates.get(row.operator_id, (0, 0, 0))
        rates[row.operator_id] = (total + row.answered, approved + row.approved,
                                  last + (row.answered if row.minute == last_minute else 0))
    return _render(request, "links.html", operators=_link_states(switch), rates=rates,
                   window_minutes=int(LIVE_WINDOW.total_seconds() // 60))


async def reload(request: Request) -> Response:
    """POST: re-read the configuration file, as the API's /api/reload and SIGHUP do."""
    user = _require(request, "operator", "reload the configuration")
    if isinstance(user, Response):
        return user
    _same_origin(request)
    reloaded = await ask_reload(request.app.state.admin, user.name, "on the console")
    outcome = "reload_asked" if reloaded is None else "reloaded" if reloaded else "reload_refused"
    return RedirectResponse(f"{PREFIX}/links?msg={outcome}", 303)


async def reversals(request: Request) -> Response:
    user = _require(request, "viewer", "read")
    if isinstance(user, Response):
        return user
    found = await _journal(request.app.state.admin.switch.journal.reversals(("failed", "pending"), REVERSALS_SHOWN))
    failed = [r for r in found if r.state == "failed"]
    pending = [r for r in found if r.state == "pending"]
    return _render(request, "reversals.html", failed=failed, pending=pending, error=None, note="",
                   error_txn=None)


async def resolve(request: Request) -> Response:
    """POST note=...: close a failed reversal settled with the operator by other means (operator role)."""
    user = _require(request, "operator", "resolve reversals")
    if isinstance(user, Response):
        return user
    _same_origin(request)
    switch = request.app.state.admin.switch
    txn_id = request.path_params["txn_id"]
    note = (await _form(request)).get("note", "").strip()
    try:
        await resolve_by_hand(switch, user.name, txn_id, note, "on the console")
    except HTTPException as refused:
        problem = refused.status_code, refused.detail
    else:
        return RedirectResponse(f"{PREFIX}/reversals?msg=resolved", 303)
    found = await _journal(switch.journal.reversals(("failed", "pending"), REVERSALS_SHOWN))
    return _render(request, "reversals.html", problem[0], failed=[r for r in found if r.state == "failed"],
                   pending=[r for r in found if r.state == "pending"], error=problem[1], note=note,
                   error_txn=txn_id)


# -- what the pages show -------------------------------------------------------------------

def _zone(switch) -> ZoneInfo:
    return ZoneInfo(switch.config.business_day.timezone)


def _local(at: datetime, zone: ZoneInfo) -> datetime:
    return at.astimezone(zone)


def _minute(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


def _amount(amount: int | None, currency: str | None) -> str:
    if amount is None:
        return ""
    return f"{amount:,} {CURRENCIES.get(currency or '', currency or '')}".strip()


def _operator_name(switch, operator_id: str | None) -> str:
    for operator in switch.config.operators:
        if operator.id == operator_id:
            return operator.name
    return operator_id or "no operator"


def _acquirer_name(switch, acquirer_id: str | None) -> str:
    for acquirer in switch.config.acquirers:
        if acquirer.institution_id == acquirer_id:
            return acquirer.name
    return acquirer_id or ""


def _link_states(switch) -> list[dict]:
    routed = switch.core.router.operators
    operators = []
    for operator in switch.config.operators:
        pool = switch.providers.get(operator.id)
        pool_links = pool.links if pool is not None else []
        operators.append({
            "id": operator.id, "name": operator.name, "dialect": operator.dialect, "routed": operator.id in routed,
            "up": bool(pool is not None and pool.is_up), "in_flight": sum(link.in_flight for link in pool_links),
            "links": [{"name": link.name, "mode": "connect" if link.link is not None else "accept",
                       "up": link.is_up, "in_flight": link.in_flight} for link in pool_links]})
    return operators


def chart(rows, operator_id: str, now: datetime, zone: ZoneInfo) -> dict:
    """One operator's last hour as SVG geometry: a bar a minute (approved below, the rest above) and
    the approval rate as a line. The template draws it."""
    width, height, left, top = 600, 120, 40, 10
    start = _minute(now) - CHART_WINDOW + timedelta(minutes=1)
    minutes = [start + timedelta(minutes=i) for i in range(CHART_MINUTES)]
    counts = {row.minute: (row.answered, row.approved) for row in rows
              if row.operator_id == operator_id and row.minute >= start}
    peak = max((answered for answered, _ in counts.values()), default=0)
    scale = _nice(peak)
    slot = width / CHART_MINUTES
    bars, rate_points = [], []
    for i, minute in enumerate(minutes):
        answered, approved = counts.get(minute, (0, 0))
        if not answered:
            continue
        x = left + i * slot
        approved_h = height * approved / scale
        other_h = height * (answered - approved) / scale
        bars.append({"x": round(x + 1, 1), "w": round(slot - 2, 1),
                     "approved_y": round(top + height - approved_h, 1), "approved_h": round(approved_h, 1),
                     "other_y": round(top + height - approved_h - other_h, 1), "other_h": round(other_h, 1),
                     "title": f"{_local(minute, zone):%H:%M}: {answered} top-ups, {approved} approved "
                              f"({100 * approved / answered:.0f}%)"})
        rate_points.append(f"{x + slot / 2:.1f},{top + height * (1 - approved / answered):.1f}")
    total = sum(answered for answered, _ in counts.values())
    approved_total = sum(approved for _, approved in counts.values())
    ticks = [{"x": round(left + i * slot, 1), "label": f"{_local(minutes[i], zone):%H:%M}"}
             for i in range(0, CHART_MINUTES, 15)]
    ticks.append({"x": left + width, "label": f"{_local(minutes[-1] + timedelta(minutes=1), zone):%H:%M}"})
    return {"operator": operator_id, "summary": _plural(total, "top-up"), "total": total, "approved": approved_total,
            "rate_percent": None if not total else 100 * approved_total / total, "scale": scale, "bars": bars,
            "rate": " ".join(rate_points), "ticks": ticks, "width": width, "height": height, "left": left,
            "top": top}


def _nice(peak: int) -> int:
    """The chart's top: the smallest 1, 2 or 5 times a power of ten at or above the busiest minute."""
    magnitude = 1
    while True:
        for step in (1, 2, 5):
            if step * magnitude >= peak:
                return step * magnitude
        magnitude *= 10


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def _timeline_row(switch, event: dict, reversal) -> dict:
    """api.timeline's event as a row of the page: when, what in words, the details, a class for its colour."""
    what, at = event["what"], event["at"]
    name = _operator_name(switch, event.get("operator"))
    if what == "intake":
        details = [f"{event['mti']} from {_acquirer_name(switch, event['acquirer'])} ({event['acquirer']})",
                   f"tracking code {event['tracking_code']}", f"STAN {event['stan']}",
                   f"MSISDN {event['msisdn']}", _amount(event["amount"], event["currency"])]
        details += [f"{label} {event[key]}" for key, label in (("channel", "channel"), ("terminal_id", "terminal"),
                                                                ("merchant_id", "merchant"),
                                                                ("card_masked", "card")) if event.get(key)]
        return {"at": at, "title": "Request received", "details": details, "kind": "intake"}
    if what == "routed":
        return {"at": at, "title": f"Sent to {name}", "details": [f"switch's STAN at the operator "
                                                                  f"{event['operator_stan'] or '-'}"], "kind": "sent"}
    if what == "float":
        details = [f"account {event['account']}", f"amount {event['amount']:+,}",
                   f"held {event['held_change']:+,}", f"balance after {event['balance_after']:,}",
                   f"by {event['actor']}"] + ([event["note"]] if event.get("note") else [])
        return {"at": at, "title": f"Float: {event['kind']}", "details": details, "kind": "float"}
    code = event["response_code"]
    operator_said = [f"operator answered {event['operator_code']}"] if event.get("operator_code") else []
    reference = [f"reference {event['operator_ref']}"] if event.get("operator_ref") else []
    approval = [f"approval code {event['approval_code']}"] if event.get("approval_code") else []
    titles = {
        "end": "Outcome: unknown (no answer in time)" if event["state"] == "unknown"
        else f"Outcome: {event['state'].replace('_', ' ')}",
        "late_answer": f"Late answer from {name}",
        "acquirer_reversal": "The bank asked to reverse it",
        "recovered": "Found unfinished after a restart",
        "reversal_done": f"Reversal confirmed by {name}",
        "reversal_failed": "Reversal given up: needs a person",
        "manual_resolution": "Resolved by hand",
        "reversal_reopened": "Reversal reopened (late approval)",
    }
    details = []
    if event["event"] in ("end", "recovered"):
        details.append(f"the bank got {code} ({CODE_WORDS.get(code, 'code ' + code)})")
    details += operator_said + reference + approval
    if event["event"] == "end":
        details.append(f"{event['latency_ms']:.0f} ms after it came in")
    if event["event"] == "reversal_failed" and reversal is not None:
        details.append(f"after {_plural(reversal.attempts, 'attempt')}")
    if event.get("note"):
        details.append(event["note"])
    kind = {"approved": "ok", "reversed": "ok", "resolved": "ok", "declined": "bad", "refused": "bad",
            "reversal_failed": "bad"}.get(event["state"], "warn")
    if event["event"] == "late_answer":
        kind = "warn"
    stores = (event["event"] == "end" and event["state"] == "unknown") or \
        event["event"] in ("acquirer_reversal", "recovered")
    return {"at": at, "title": titles.get(event["event"], event["event"]), "details": details, "kind": kind,
            "stores_reversal": stores}


def _reversal_row(switch, reversal) -> dict:
    details = [REASONS.get(reversal.reason, reversal.reason)]
    if reversal.state == "pending":
        details.append(f"being sent: {_plural(reversal.attempts, 'attempt')} so far")
    if reversal.last_error and reversal.state in ("pending", "failed"):
        details.append(f"last error: {reversal.last_error}")
    return {"at": reversal.created_at, "title": f"Reversal stored for {_operator_name(switch, reversal.operator_id)}",
            "details": details, "kind": "warn"}


def explain(switch, view, outcomes, reversal, zone: ZoneInfo) -> list[str]:
    """What happened, in sentences a call-center agent can read out: how the top-up ended, then each later event."""
    def at(moment) -> str:
        return _local(moment, zone).strftime("%H:%M:%S")

    operator = _operator_name(switch, view.operator_id or view.routed_operator)
    sentences = []
    ends = [o for o in outcomes if o.event in ("end", "recovered")]
    if not ends:
        if view.routed_operator:
            sentences.append(f"Sent to {operator} at {at(view.operator_sent_at or view.received_at)}; "
                             "no answer yet (in flight).")
        else:
            sentences.append(f"Received at {at(view.received_at)}; not finished yet.")
    for outcome in outcomes:
        name = _operator_name(switch, outcome.operator_id or view.routed_operator)
        code = outcome.response_code
        words = CODE_WORDS.get(code, f"code {code}")
        if outcome.event == "end":
            if outcome.state == "approved":
                reference = f", reference {outcome.operator_ref}" if outcome.operator_ref else ""
                approval = f" (approval code {outcome.approval_code})" if outcome.approval_code else ""
                sentences.append(f"Approved by {name} at {at(outcome.ended_at)}{reference}{approval}: "
                                 "the bank got 00 and the subscriber was credited.")
            elif outcome.state == "declined" and outcome.operator_code is None and code == "91":
                sentences.append(f"Not sent: {name} had no live link at {at(outcome.ended_at)}. The bank got 91; "
                                 "nothing was credited.")
            elif outcome.state == "declined":
                said = f" (the operator answered {outcome.operator_code})" if outcome.operator_code else ""
                sentences.append(f"Declined by {name} at {at(outcome.ended_at)}{said}: the bank got {code}, "
                                 f"{words}. Nothing was credited.")
            elif outcome.state == "unknown":
                sentences.append(f"No answer from {name}: the bank got 91 at {at(outcome.ended_at)}, and a "
                                 "reversal was stored so the operator undoes it if it did credit.")
            elif outcome.state == "refused":
                sentences.append(f"Refused by the switch at {at(outcome.ended_at)}: the bank got {code}, {words}. "
                                 "No operator saw it.")
            else:
                sentences.append(f"Ended {outcome.state.replace('_', ' ')} at {at(outcome.ended_at)}: "
                                 f"the bank got {code}, {words}.")
        elif outcome.event == "recovered":
            sentences.append(f"The switch stopped while waiting for {name}; after the restart, at "
                             f"{at(outcome.ended_at)}, it was recorded as unanswered and a reversal was stored.")
        elif outcome.event == "late_answer":
            said = f" with code {outcome.operator_code}" if outcome.operator_code else ""
            sentences.append(f"{name} answered late, at {at(outcome.ended_at)}{said}: recorded, but it did not "
                             "change what the bank got.")
        elif outcome.event == "acquirer_reversal":
            sentences.append(f"The bank asked to reverse it at {at(outcome.ended_at)}: a reversal was stored "
                             f"for {name}.")
        elif outcome.event == "reversal_done":
            sentences.append(f"The top-up was reversed at {at(outcome.ended_at)} ({name} answered the reversal).")
        elif outcome.event == "reversal_failed":
            attempts = f" after {_plural(reversal.attempts, 'attempt')}" if reversal is not None else ""
            sentences.append(f"The switch gave up sending the reversal to {name} at {at(outcome.ended_at)}"
                             f"{attempts}: a person must settle it with {name} (reversal queue).")
        elif outcome.event == "manual_resolution":
            note = f": {reversal.last_error}" if reversal is not None and reversal.last_error else ""
            sentences.append(f"Settled by hand at {at(outcome.ended_at)}{note}.")
        elif outcome.event == "reversal_reopened":
            sentences.append(f"{name} approved it late at {at(outcome.ended_at)}, after its reversal was settled "
                             "as nothing to reverse: the reversal is being sent again.")
    if reversal is not None and reversal.state == "pending":
        sentences.append(f"The reversal is being sent to {_operator_name(switch, reversal.operator_id)}: "
                         f"{_plural(reversal.attempts, 'attempt')} so far, the next at "
                         f"{at(reversal.next_attempt_at)}.")
    return sentences



