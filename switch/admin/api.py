"""The JSON API under /api/: what the call center and operations ask of the switch.

Reads (role `viewer`): transactions searched by MSISDN (any accepted form), tracking code,
acquirer, operator, state and time, newest first and paged; one transaction with its timeline;
the operator links; the reversal queue. Changes (role `operator`): resolve a reversal settled by
other means, reload the configuration. Every change is journaled (admin_event) and logged at
WARNING with the user, and a resolution's note in the journal names the user.

Bodies are JSON (msgspec); times ISO 8601 with offset; amounts integers in minor units. Card
numbers are only ever the masked ones the journal keeps.
"""

from __future__ import annotations

import logging
import os
import signal
from datetime import datetime, timezone

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from routing import InvalidMsisdn, normalise_msisdn
from switch.accounts import LedgerError
from switch.admin.auth import may, user_of
from switch.app.config import AdminUser
from switch.flow.states import TxnState
from switch.flow.store_and_forward import resolve_reversal
from switch.journal import JournalError, PendingReversal, TransactionQuery, TransactionView

log = logging.getLogger("airswitch.admin")

PAGE_DEFAULT = 50
PAGE_MAX = 500
REVERSALS_MAX = 1000
_encoder = msgspec.json.Encoder()


def json(body: object, status: int = 200) -> Response:
    return Response(_encoder.encode(body), status_code=status, media_type="application/json")


def authorize(request: Request, role: str) -> AdminUser:
    """The request's user, if it may act as `role`: 401 without a known token, 403 below the role."""
    admin = request.app.state.admin
    user = user_of(request.headers.get("authorization"), admin.switch.config.admin.users)
    if user is None:
        raise HTTPException(401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"})
    if not may(user, role):
        raise HTTPException(403, f"{user.name} ({user.role}) may not do this: it needs the {role} role")
    return user


def _time(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise HTTPException(400, f"{name}: not an ISO 8601 time: {value!r}") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)   # naive: UTC


def _cursor(value: str | None) -> tuple[datetime, str] | None:
    if value is None:
        return None
    at, _, txn_id = value.partition("|")
    if not txn_id:
        raise HTTPException(400, f"cursor: not one this API gave: {value!r}")
    return _time(at, "cursor"), txn_id


def _int(value: str | None, name: str, default: int, maximum: int) -> int:
    if value is None:
        return default
    if not value.isdigit() or not 1 <= int(value) <= maximum:
        raise HTTPException(400, f"{name}: a whole number from 1 to {maximum}")
    return int(value)


async def _journal(call):
    try:
        return await call
    except JournalError as exc:
        raise HTTPException(503, f"journal unavailable: {exc}") from None


# -- reads -----------------------------------------------------------------------------------

async def transactions(request: Request) -> Response:
    """GET /api/transactions?msisdn=&tracking_code=&acquirer=&operator=&state=&since=&until=&limit=&cursor="""
    authorize(request, "viewer")
    params = request.query_params
    msisdn = params.get("msisdn")
    if msisdn is not None:
        try:
            msisdn = normalise_msisdn(msisdn.strip(), request.app.state.admin.switch.config.admin.country)
        except InvalidMsisdn as exc:
            raise HTTPException(400, f"msisdn: {exc}") from None
    state = params.get("state")
    if state is not None and state != "in_flight" and state not in {s.value for s in TxnState}:
        raise HTTPException(400, f"state: one of {', '.join([*TxnState, 'in_flight'])}")
    limit = _int(params.get("limit"), "limit", PAGE_DEFAULT, PAGE_MAX)
    query = TransactionQuery(msisdn=msisdn, tracking_code=params.get("tracking_code"),
                             acquirer_id=params.get("acquirer"), operator_id=params.get("operator"), state=state,
                             since=_time(params.get("since"), "since"), until=_time(params.get("until"), "until"),
                             before=_cursor(params.get("cursor")))
    found = await _journal(request.app.state.admin.switch.journal.search(query, limit + 1))
    page = found[:limit]
    cursor = f"{page[-1].received_at.isoformat()}|{page[-1].txn_id}" if len(found) > limit else None
    return json({"items": page, "next_cursor": cursor})


class TransactionRecord(msgspec.Struct, frozen=True):
    """One transaction as the journal and the ledger know it: what the API and the console show."""
    view: TransactionView
    outcomes: list
    reversal: PendingReversal | None
    movements: list
    float_error: str | None


async def transaction_record(switch, txn_id: str) -> TransactionRecord | None:
    """The transaction, its outcome rows, its reversal and its float movements; None if there is none.
    A journal that does not answer is 503; a ledger that does not answer is only noted."""
    view = await _journal(switch.journal.transaction(txn_id))
    if view is None:
        return None
    outcomes = await _journal(switch.journal.outcome_rows(txn_id))
    reversal = await _journal(switch.journal.reversal(txn_id))
    movements, float_error = [], None
    if switch.ledger is not None:
        try:
            movements = await switch.ledger.movements(txn_id)
        except LedgerError as exc:
            float_error = str(exc)
    return TransactionRecord(view, outcomes, reversal, movements, float_error)


async def transaction(request: Request) -> Response:
    """GET /api/transactions/{txn_id}: the transaction now, and everything that happened to it, in order."""
    authorize(request, "viewer")
    txn_id = request.path_params["txn_id"]
    record = await transaction_record(request.app.state.admin.switch, txn_id)
    if record is None:
        raise HTTPException(404, f"no transaction {txn_id}")
    return json({"transaction": record.view, "reversal": record.reversal, "float_movements": record.movements,
                 "float_error": record.float_error,
                 "timeline": timeline(record.view, record.outcomes, record.reversal, record.movements)})


def timeline(view, outcomes, reversal, movements) -> list[dict]:
    """One list, oldest first: the intake, the request to the operator, each outcome row (its end, late
    answers, reversal events, a manual resolution with its note) and each float movement."""
    events = [{"at": view.received_at, "what": "intake", "mti": view.mti, "acquirer": view.acquirer_id,
               "tracking_code": view.tracking_code, "stan": view.stan, "terminal_id": view.terminal_id,
               "merchant_id": view.merchant_id, "card_masked": view.card_masked, "msisdn": view.msisdn,
               "amount": view.amount, "currency": view.currency, "channel": view.channel}]
    if view.routed_operator is not None:
        events.append({"at": view.operator_sent_at or view.received_at, "what": "routed",
                       "operator": view.routed_operator, "operator_stan": view.operator_stan})
    for outcome in outcomes:
        event = {"at": outcome.ended_at, "what": "outcome", "event": outcome.event, "state": outcome.state,
                 "response_code": outcome.response_code, "operator": outcome.operator_id,
                 "operator_code": outcome.operator_code, "operator_ref": outcome.operator_ref,
                 "approval_code": outcome.approval_code, "latency_ms": outcome.latency_ms}
        if outcome.event == "manual_resolution" and reversal is not None:
            event["note"] = reversal.last_error
        events.append(event)
    for entry in movements:
        events.append({"at": entry.at, "what": "float", "kind": entry.kind, "account": entry.account_id,
                       "amount": entry.amount, "held_change": entry.held_change,
                       "balance_after": entry.balance_after, "actor": entry.actor, "note": entry.note})
    events.sort(key=lambda event: event["at"])   # stable: rows written at one instant keep their order
    return events


async def links(request: Request) -> Response:
    """GET /api/links: every configured operator, whether routes lead to it, and its links now."""
    authorize(request, "viewer")
    switch = request.app.state.admin.switch
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
    return json({"operators": operators})


async def reversals(request: Request) -> Response:
    """GET /api/reversals?state=pending&state=failed&limit=: the stored reversals, oldest first per operator."""
    authorize(request, "viewer")
    states = tuple(request.query_params.getlist("state")) or ("pending", "failed")
    unknown = [s for s in states if s not in ("pending", "failed", "done", "resolved")]
    if unknown:
        raise HTTPException(400, f"state: {', '.join(unknown)} is not one of pending, failed, done, resolved")
    limit = _int(request.query_params.get("limit"), "limit", 200, REVERSALS_MAX)
    found = await _journal(request.app.state.admin.switch.journal.reversals(states, limit))
    return json({"items": found})


# -- changes -----------------------------------------------------------------------------------

class Resolution(msgspec.Struct, forbid_unknown_fields=True):
    note: str   # how it was settled: ticket, person at the operator


async def resolve_by_hand(switch, user: str, txn_id: str, note: str, where: str) -> None:
    """Close a failed reversal a person settled with the operator by other means, journaled with who did
    it (the API and the console both come here). HTTPException 400 / 404 / 409 when it cannot be."""
    note = note.strip()
    owed = await _journal(switch.journal.reversal(txn_id))
    if owed is None:
        raise HTTPException(404, f"Transaction {txn_id} has no stored reversal.")
    if owed.state != "failed":
        # A pending one is still being sent: its next attempt would write over a resolution.
        raise HTTPException(409, f"The reversal of {txn_id} is {owed.state}: only a failed one (store-and-forward "
                            "gave up) is resolved by hand.")
    if not note:
        raise HTTPException(400, "Say how it was settled (a ticket number, the person at the operator).")
    if not await _journal(resolve_reversal(switch.journal, txn_id, f"{note} (resolved by {user} {where})")):
        raise HTTPException(409, f"The reversal of {txn_id} is no longer failed.")
    log.warning("admin: %s resolved the reversal of txn %s at %s by hand %s: %s", user, txn_id, owed.operator_id,
                where, note)
    await audit(switch, user, "resolve", f"txn {txn_id} at {owed.operator_id} {where}: {note}")


async def ask_reload(admin, user: str, where: str) -> bool | None:
    """Re-read the configuration (as SIGHUP does): True or False for this process; None when it is one
    of `serve --workers N`, where the supervisor passes SIGHUP on to every worker, this one included."""
    log.warning("admin: %s asked for a configuration reload %s", user, where)
    await audit(admin.switch, user, "reload", where)
    if admin.supervised:
        os.kill(os.getppid(), signal.SIGHUP)
        return None
    return await admin.switch.reload()


async def resolve(request: Request) -> Response:
    """POST /api/reversals/{txn_id}/resolve {"note": "..."}: close a failed reversal settled by other means."""
    user = authorize(request, "operator")
    switch = request.app.state.admin.switch
    txn_id = request.path_params["txn_id"]
    try:
        body = msgspec.json.decode(await request.body(), type=Resolution)
    except msgspec.DecodeError as exc:
        raise HTTPException(400, f"body: {exc}") from None
    await resolve_by_hand(switch, user.name, txn_id, body.note, "on the admin API")
    return json({"resolved": True, "reversal": await _journal(switch.journal.reversal(txn_id))})


async def reload(request: Request) -> Response:
    """POST /api/reload: re-read the configuration file (as SIGHUP does)."""
    user = authorize(request, "operator")
    reloaded = await ask_reload(request.app.state.admin, user.name, "on the admin API")
    if reloaded is None:
        return json({"reloaded": None, "detail": "every worker was asked to reload; their logs say the result"},
                    202)
    if reloaded:
        return json({"reloaded": True})
    return json({"reloaded": False, "detail": "the configuration does not validate; the running one stays "
                 "(the log says why)"}, 422)


async def audit(switch, actor: str, action: str, detail: str) -> None:
    """Journal a change a person made (who, what). A journal that cannot take it does not undo the
    change, which is already done or asked for: the WARNING log line beside it still says who."""
    try:
        await switch.journal.record_admin_event(actor, action, detail)
    except JournalError as exc:
        log.error("admin: %s's %s not journaled (%s); the log has it", actor, action, exc)


ROUTES = [
    Route("/api/transactions", transactions),
    Route("/api/transactions/{txn_id}", transaction),
    Route("/api/links", links),
    Route("/api/reversals", reversals),
    Route("/api/reversals/{txn_id}/resolve", resolve, methods=["POST"]),
    Route("/api/reload", reload, methods=["POST"]),
]
