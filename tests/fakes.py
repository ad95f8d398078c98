"""In-memory stand-ins for what the transaction core talks to, written against the declared
interfaces only: the `Journal` Protocol, the `Provider` Protocol and the float ledger's calls.
No sockets, no Postgres; each has a switchable failure mode. Also small builders of the
configuration, router, requests and a `TransactionCore` wired to the fakes, for the flow tests.

Every fake appends what it was asked to do to a shared `trail` (a list of tuples), so a test
can check the order in which the core used them (intake before the provider call, and so on).
"""

from __future__ import annotations

import asyncio
import itertools
from datetime import date, datetime
from typing import Callable

import msgspec

from routing import AmountRule, Router
from switch.accounts import Balance, InsufficientFloat, LedgerError, LedgerUnavailable, UnknownAccount, UnknownHold
from switch.journal.core import BATCH_BUCKETS, COMMIT_BUCKETS
from switch.clock import utcnow
from switch.stats import Buckets
from switch.app.config import AcquirerConfig, ReversalConfig, SwitchConfig
from switch.flow.core import TransactionCore
from switch.flow.messages import Kind, Original, Payer, PayerKind, Request
from switch.flow.participants.dedupe import DedupeWindow
from switch.flow.participants.float_hold import FloatHold
from switch.journal import (AdminEvent, Intake, JournalRejected, JournalUnavailable, Outcome, PendingReversal, Reversal,
                            ReversalUpdate, TransactionView)
from switch.providers.base import OperatorAnswer, OperatorReversal, ReversalAnswer, TopUp

RIAL = "364"
MELLI = "603799"
ACCOUNT = "FLOAT-603799"
MCI_NUMBER = "09121234567"            # routes to MCI
IRANCELL_NUMBER = "09351234567"       # routes to IRANCELL
UNROUTED_NUMBER = "09211234567"       # a valid Iranian mobile number no route serves
NOTHING_TO_REVERSE = "25"             # the fake provider's "nothing to reverse" reversal code


class Failures:
    """Which calls fail, and how many more times (None: until healed)."""

    def __init__(self, error: Callable[[str], Exception]) -> None:
        self._left: dict[str, int | None] = {}
        self._error = error
        self.raised: dict[str, int] = {}

    def fail(self, method: str, times: int | None = None) -> None:
        self._left[method] = times

    def heal(self) -> None:
        self._left.clear()

    def check(self, method: str) -> None:
        if method not in self._left:
            return
        left = self._left[method]
        if left is not None:
            if left <= 1:
                del self._left[method]
            else:
                self._left[method] = left - 1
        self.raised[method] = self.raised.get(method, 0) + 1
        raise self._error(f"{method}: the fake is down")


class FakeJournal:
    """The `Journal` Protocol in memory. The view of a transaction is its intake and its latest
    outcome that is not a late answer, as in the real `transactions` view. Records are not checked
    against each other (an outcome for a txn with no intake is kept), so a test sees every write."""

    def __init__(self, trail: list | None = None) -> None:
        self.trail = trail if trail is not None else []
        self.failures = Failures(JournalUnavailable)
        self.batches_committed = 0
        self.records_spilled = 0
        self.admin_event_log: list[AdminEvent] = []
        self.commit_seconds = Buckets(COMMIT_BUCKETS)
        self.batch_records = Buckets(BATCH_BUCKETS)
        self.queued = 0
        self.spilling = False
        self.intakes: dict[str, Intake] = {}
        self.attempted_intakes: list[Intake] = []      # every record_intake call, stored or not
        self.keys: dict[tuple[str, str, date], str] = {}
        self.outcomes: list[Outcome] = []
        self.refusals: list[tuple[Intake, Outcome]] = []
        self.stored_reversals: dict[str, dict] = {}
        self.reversal_updates: list[ReversalUpdate] = []
        self.reads: dict[str, int] = {}

    def fail(self, method: str, times: int | None = None) -> None:
        """Make `method` raise JournalUnavailable (`times` times, or until `heal`)."""
        self.failures.fail(method, times)

    def heal(self) -> None:
        self.failures.heal()

    # -- writes ---------------------------------------------------------------------------
    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def record_intake(self, intake: Intake) -> bool:
        self.trail.append(("record_intake", intake.txn_id))
        self.attempted_intakes.append(intake)
        self.failures.check("record_intake")
        if intake.uses_key:
            key = (intake.acquirer_id, intake.tracking_code, intake.business_day)
            if key in self.keys:
                return False
            self.keys[key] = intake.txn_id
        self.intakes[intake.txn_id] = intake
        self.batches_committed += 1
        return True

    async def record_outcome(self, outcome: Outcome, reversal: Reversal | None = None) -> None:
        self.trail.append(("record_outcome", outcome.txn_id, outcome.state, outcome.event))
        self.failures.check("record_outcome")
        self.outcomes.append(outcome)
        if reversal is not None and reversal.txn_id not in self.stored_reversals:
            self.stored_reversals[reversal.txn_id] = {
                "reversal": reversal, "state": "pending", "attempts": 0, "next_attempt_at": reversal.created_at,
                "last_error": None, "operator_code": None}
        self.batches_committed += 1

    async def record_reversal_update(self, update: ReversalUpdate, outcome: Outcome | None = None) -> None:
        self.trail.append(("record_reversal_update", update.txn_id, update.state))
        self.failures.check("record_reversal_update")
        self.reversal_updates.append(update)
        stored = self.stored_reversals.get(update.txn_id)
        if stored is not None:
            stored.update(state=update.state, attempts=update.attempts, next_attempt_at=update.next_attempt_at,
                          last_error=update.last_error, operator_code=update.operator_code)
        if outcome is not None:
            self.outcomes.append(outcome)
        self.batches_committed += 1

    async def record_refusal(self, intake: Intake, outcome: Outcome) -> None:
        self.trail.append(("record_refusal", intake.txn_id, outcome.response_code))
        self.failures.check("record_refusal")
        if intake.uses_key:
            raise JournalRejected("a refusal must not use the dedupe key")
        self.refusals.append((intake, outcome))
        self.intakes[intake.txn_id] = intake
        self.outcomes.append(outcome)
        self.batches_committed += 1

    # -- reads ----------------------------------------------------------------------------
    def _read(self, method: str) -> None:
        self.reads[method] = self.reads.get(method, 0) + 1
        self.failures.check(method)

    def view(self, txn_id: str) -> TransactionView | None:
        intake = self.intakes.get(txn_id)
        if intake is None:
            return None
        deciding = [o for o in self.outcomes if o.txn_id == txn_id and o.event != "late_answer"]
        latest = deciding[-1] if deciding else None
        return TransactionView(
            **{f: getattr(intake, f) for f in Intake.__struct_fields__},
            state=latest.state if latest else None,
            response_code=latest.response_code if latest else None,
            operator_id=latest.operator_id if latest else None,
            operator_ref=latest.operator_ref if latest else None,
            approval_code=latest.approval_code if latest else None,
            operator_code=latest.operator_code if latest else None,
            ended_at=latest.ended_at if latest else None,
            latency_ms=latest.latency_ms if latest else None)

    async def find(self, acquirer_id: str, tracking_code: str, business_day: date) -> TransactionView | None:
        self._read("find")
        txn_id = self.keys.get((acquirer_id, tracking_code, business_day))
        return self.view(txn_id) if txn_id else None

    async def find_latest(self, acquirer_id: str, tracking_code: str) -> TransactionView | None:
        self._read("find_latest")
        holding = [self.intakes[txn_id] for (acquirer, code, _), txn_id in self.keys.items()
                   if acquirer == acquirer_id and code == tracking_code]
        if not holding:
            return None
        return self.view(max(holding, key=lambda intake: intake.received_at).txn_id)

    async def transaction(self, txn_id: str) -> TransactionView | None:
        self._read("transaction")
        return self.view(txn_id)

    async def try_lead(self) -> bool:
        return True

    async def reversal(self, txn_id: str) -> PendingReversal | None:
        found = [r for r in await self.reversals(("pending", "done", "failed", "resolved")) if r.txn_id == txn_id]
        return found[0] if found else None

    async def record_admin_event(self, actor: str, action: str, detail: str | None = None) -> None:
        self.admin_event_log.append(AdminEvent(utcnow(), actor, action, detail))

    async def admin_events(self, limit: int = 100) -> list[AdminEvent]:
        return list(reversed(self.admin_event_log))[:limit]

    async def reversals(self, states: tuple[str, ...] = ("pending",), limit: int = 1000) -> list[PendingReversal]:
        self._read("reversals")
        found = []
        for txn_id, stored in self.stored_reversals.items():
            if stored["state"] not in states:
                continue
            reversal, intake = stored["reversal"], self.intakes.get(txn_id)
            found.append(PendingReversal(
                txn_id=txn_id, operator_id=reversal.operator_id, reason=reversal.reason, state=stored["state"],
                attempts=stored["attempts"], created_at=reversal.created_at,
                next_attempt_at=stored["next_attempt_at"], last_error=stored["last_error"],
                acquirer_id=intake.acquirer_id if intake else "", tracking_code=intake.tracking_code if intake else "",
                msisdn=intake.msisdn if intake else None, amount=intake.amount if intake else None,
                currency=intake.currency if intake else None,
                operator_stan=intake.operator_stan if intake else None,
                operator_sent_at=intake.operator_sent_at if intake else None))
        return found[:limit]

    async def orphans(self, since: datetime, until: datetime) -> list[TransactionView]:
        self._read("orphans")
        with_outcome = {o.txn_id for o in self.outcomes}
        return [self.view(i.txn_id) for i in self.intakes.values()
                if i.routed_operator and i.txn_id not in with_outcome and since <= i.received_at < until]

    async def states(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for txn_id in self.intakes:
            state = self.view(txn_id).state or "in flight"
            counts[state] = counts.get(state, 0) + 1
        return counts

    async def approved_answers(self) -> set[tuple[str, str]]:
        return {(v.acquirer_id, v.tracking_code) for v in map(self.view, self.intakes) if v.response_code == "00"}

    async def approved_at_operators(self) -> list[tuple]:
        return [(v.txn_id, v.operator_id, v.operator_ref) for v in map(self.view, self.intakes)
                if v.state == "approved"]

    async def count_transactions(self) -> int:
        return len(self.intakes)

    async def summary(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for view in map(self.view, self.intakes):
            code = view.response_code or "pending"
            counts[code] = counts.get(code, 0) + 1
        return counts

    async def history(self, txn_id: str) -> list[tuple]:
        return [(o.ended_at, o.state, o.event, o.response_code, o.operator_code, o.operator_ref)
                for o in self.outcomes_of(txn_id)]

    async def outcome_rows(self, txn_id: str) -> list[Outcome]:
        self._read("outcome_rows")
        return self.outcomes_of(txn_id)

    async def search(self, query, limit: int = 50) -> list[TransactionView]:
        self._read("search")
        views = sorted(map(self.view, self.intakes), key=lambda v: (v.received_at, v.txn_id), reverse=True)
        return [v for v in views if query.msisdn in (None, v.msisdn)
                and query.tracking_code in (None, v.tracking_code)][:limit]

    async def reversal_queue(self) -> list:
        self._read("reversal_queue")
        return []

    async def throughput(self, since) -> list:
        self._read("throughput")
        return []

    async def ping(self) -> None:
        self._read("ping")

    # -- for the tests ----------------------------------------------------------------------
    def outcomes_of(self, txn_id: str) -> list[Outcome]:
        return [o for o in self.outcomes if o.txn_id == txn_id]

    def key_intakes(self) -> list[Intake]:
        return [self.intakes[txn_id] for txn_id in self.keys.values()]

    def only_key_intake(self) -> Intake:
        intakes = self.key_intakes()
        assert len(intakes) == 1, intakes
        return intakes[0]


# -- the provider -------------------------------------------------------------------------

def approve(ref: str = "OPREF-1", approval_code: str | None = "A1B2C3") -> OperatorAnswer:
    return OperatorAnswer(response_code="00", operator_code="00", approval_code=approval_code, operator_ref=ref)


def decline(code: str, operator_code: str | None = None) -> OperatorAnswer:
    return OperatorAnswer(response_code=code, operator_code=operator_code or code, operator_ref="OPREF-NO")


class FakeProvider:
    """The `Provider` Protocol with scripted outcomes. `script` is consumed one outcome a call
    (an OperatorAnswer to answer, an exception to raise: NotSent, NoAnswer); once it is empty,
    `default` answers. While `gate` is set to an unset asyncio.Event, calls wait for it."""

    def __init__(self, provider_id: str, *script, default=None, trail: list | None = None) -> None:
        self.id = provider_id
        self.script = list(script)
        self.default = default if default is not None else approve()
        self.reverse_script: list = []
        self.reverse_default = ReversalAnswer(settled=True, operator_code="00")
        self.trail = trail if trail is not None else []
        self.gate: asyncio.Event | None = None
        self.calls: list[TopUp] = []
        self.reversals: list[OperatorReversal] = []
        self.up = True
        self._references = itertools.count(1)

    def next_reference(self) -> str:
        return f"{next(self._references):06d}"

    @property
    def is_up(self) -> bool:
        return self.up

    async def top_up(self, topup: TopUp) -> OperatorAnswer:
        self.trail.append(("top_up", topup.txn_id))
        self.calls.append(topup)
        if self.gate is not None:
            await self.gate.wait()
        outcome = self.script.pop(0) if self.script else self.default
        if isinstance(outcome, BaseException) or (isinstance(outcome, type) and issubclass(outcome, BaseException)):
            raise outcome
        return outcome

    async def reverse(self, reversal: OperatorReversal) -> ReversalAnswer:
        self.trail.append(("reverse", reversal.txn_id))
        self.reversals.append(reversal)
        outcome = self.reverse_script.pop(0) if self.reverse_script else self.reverse_default
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def is_nothing_to_reverse(self, operator_code: str) -> bool:
        return operator_code == NOTHING_TO_REVERSE


# -- the float ledger ---------------------------------------------------------------------

class FakeLedger:
    """The float ledger's calls the flow uses (hold, capture, release, refund, balance), with the
    real one's rules: a hold needs the available float (InsufficientFloat), capture and refund
    need a hold (UnknownHold), a released hold cannot be captured nor refunded (LedgerError)."""

    def __init__(self, balances: dict[str, int] | None = None, trail: list | None = None) -> None:
        self.balances = dict(balances or {})
        self.holds: dict[str, dict] = {}       # txn_id -> {"account", "amount", "state"}
        self.trail = trail if trail is not None else []
        self.failures = Failures(LedgerUnavailable)

    def fail(self, method: str, times: int | None = None) -> None:
        """Make `method` raise LedgerUnavailable (`times` times, or until `heal`)."""
        self.failures.fail(method, times)

    def held(self, account: str) -> int:
        return sum(h["amount"] for h in self.holds.values() if h["account"] == account and h["state"] == "held")

    def state_of(self, txn_id: str) -> str | None:
        hold = self.holds.get(txn_id)
        return hold["state"] if hold else None

    async def hold(self, account_id: str, txn_id: str, amount: int, **_) -> int:
        self.trail.append(("hold", txn_id, amount))
        self.failures.check("hold")
        if account_id not in self.balances:
            raise UnknownAccount(account_id)
        available = self.balances[account_id] - self.held(account_id)
        if available < amount:
            raise InsufficientFloat(f"{account_id}: {available} < {amount}")
        self.holds[txn_id] = {"account": account_id, "amount": amount, "state": "held"}
        return available - amount

    async def capture(self, txn_id: str, **_) -> None:
        self.trail.append(("capture", txn_id))
        self.failures.check("capture")
        hold = self.holds.get(txn_id)
        if hold is None:
            raise UnknownHold(txn_id)
        if hold["state"] == "released":
            raise LedgerError(f"cannot capture {txn_id}: released")
        if hold["state"] == "held":
            hold["state"] = "captured"
            self.balances[hold["account"]] -= hold["amount"]

    async def release(self, txn_id: str, **_) -> None:
        self.trail.append(("release", txn_id))
        self.failures.check("release")
        hold = self.holds.get(txn_id)
        if hold is None:
            self.holds[txn_id] = {"account": None, "amount": 0, "state": "released"}   # the tombstone
            return
        if hold["state"] in ("captured", "refunded"):
            raise LedgerError(f"cannot release {txn_id}: {hold['state']}")
        hold["state"] = "released"

    async def refund(self, txn_id: str, **_) -> None:
        self.trail.append(("refund", txn_id))
        self.failures.check("refund")
        hold = self.holds.get(txn_id)
        if hold is None:
            raise UnknownHold(txn_id)
        if hold["state"] not in ("captured", "refunded"):
            raise LedgerError(f"cannot refund {txn_id}: {hold['state']}")
        if hold["state"] == "captured":
            hold["state"] = "refunded"
            self.balances[hold["account"]] += hold["amount"]

    async def balance(self, account_id: str) -> Balance:
        self.trail.append(("balance", account_id))
        self.failures.check("balance")
        if account_id not in self.balances:
            raise UnknownAccount(account_id)
        held = self.held(account_id)
        return Balance(balance=self.balances[account_id], held=held, available=self.balances[account_id] - held)


# -- configuration, routes, requests ---------------------------------------------------------

def acquirer(**overrides) -> AcquirerConfig:
    return AcquirerConfig(**{"institution_id": MELLI, "name": "Bank Melli Iran", **overrides})


def prepaid_acquirer(**overrides) -> AcquirerConfig:
    return acquirer(prepaid=True, account=ACCOUNT, **overrides)


def switch_config(acquirers: list[AcquirerConfig] | None = None, **overrides) -> SwitchConfig:
    return SwitchConfig(institution_id="99001", acquirers=acquirers or [acquirer()], **overrides)


def router() -> Router:
    """MCI on 98912, IRANCELL on 98935; both take 10 000 to 1 000 000 rials in steps of 1 000."""
    rule = AmountRule(currency=RIAL, minimum=10_000, maximum=1_000_000, step=1_000)
    return Router({"98912": "MCI", "98935": "IRANCELL"}, {}, {"MCI": rule, "IRANCELL": rule}, carrier_names=None)


_codes = itertools.count(1)


def tracking_code() -> str:
    return f"{next(_codes):012d}"


def top_up(payer_acquirer: AcquirerConfig | None = None, **fields) -> Request:
    payer_acquirer = payer_acquirer or acquirer()
    values = dict(kind=Kind.TOP_UP, channel="bank87", payer=Payer(kind=PayerKind.ACQUIRER, acquirer=payer_acquirer),
                  acquirer_id=payer_acquirer.institution_id, tracking_code=tracking_code(), msisdn=MCI_NUMBER,
                  amount=100_000, currency=RIAL, message_type="0200", trace="000001",
                  transmitted_at="1201101010", terminal_id="TERM0001")
    values.update(fields)
    return Request(**values)


def repeat_of(original: Request, **fields) -> Request:
    return msgspec.structs.replace(original, kind=Kind.REPEAT, message_type="0201", **fields)


def balance_inquiry(payer_acquirer: AcquirerConfig | None = None, **fields) -> Request:
    return top_up(payer_acquirer, kind=Kind.BALANCE, msisdn=None, amount=None, **fields)


def reversal_of(original: Request, *, advice: bool = False, **fields) -> Request:
    """A 0400 (0420 when advice) that names `original` as bank87 field 90 would."""
    values = dict(kind=Kind.REVERSAL, message_type="0420" if advice else "0400", advice=advice,
                  trace="000099", transmitted_at="1201101500",
                  original=Original(kind=original.message_type, trace=original.trace,
                                    transmitted_at=original.transmitted_at, acquirer_id=original.acquirer_id.zfill(11)))
    values.update(fields)
    return msgspec.structs.replace(original, **values)


class Flow:
    """A TransactionCore wired to fakes: `journal`, `providers` (MCI and IRANCELL; IRANCELL is
    routed to but can be removed), `ledger`, and a count of reversals stored for the forwarder."""

    def __init__(self, config: SwitchConfig | None = None, *, journal: FakeJournal | None = None,
                 ledger: FakeLedger | None = None, window: DedupeWindow | None = None,
                 providers: dict | None = None) -> None:
        self.trail: list = journal.trail if journal is not None else []
        self.config = config or switch_config()
        self.journal = journal or FakeJournal(self.trail)
        self.ledger = ledger or FakeLedger({ACCOUNT: 1_000_000}, self.trail)
        self.ledger.trail = self.trail
        self.providers = providers if providers is not None else {
            "MCI": FakeProvider("MCI", trail=self.trail), "IRANCELL": FakeProvider("IRANCELL", trail=self.trail)}
        self.mci = self.providers.get("MCI")
        self.reversals_stored = 0
        self.window = window or DedupeWindow(1000)
        self.float_hold = FloatHold(self.ledger, {})     # the core sets its pricing from the config
        self.core = TransactionCore(self.config, router(), self.journal, self.window, self.providers,
                                    self.float_hold, self._on_reversal_stored)

    def _on_reversal_stored(self) -> None:
        self.reversals_stored += 1

    async def handle(self, request: Request):
        return await self.core.handle(request)

    def steps(self, *names: str) -> list[tuple]:
        return [step for step in self.trail if step[0] in names]


def run_bounded(coroutine, timeout: float = 5.0):
    """asyncio.run with a bound: a scenario that waits on something that never comes fails, not hangs."""
    return asyncio.run(asyncio.wait_for(coroutine, timeout))


def reversal_config(**overrides) -> ReversalConfig:
    return ReversalConfig(**overrides)

