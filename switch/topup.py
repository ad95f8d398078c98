"""The money path, top to bottom: receive, validate, dedupe, route, journal, send,
await, journal, respond.

`TopUpFlow.handle()` takes one decoded acquirer request and returns the answer to
send (or None when the message is dropped). Everything a request needs is here;
the listener only frames bytes and the links only move operator messages.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import date

import msgspec

from routing import InvalidMsisdn, Router, normalise_msisdn
from switch.clock import BusinessCalendar, utcnow
from switch.accounts import FloatLedger, InsufficientFloat, LedgerError, LedgerUnavailable, Pricing, UnknownHold
from switch.acquirer_rules import AcquirerRules
from switch.config import AcquirerConfig, SwitchConfig, TerminalConfig
from switch.dedupe import DedupeWindow, dedupe_key
from switch.journal import Intake, Journal, JournalError, Outcome, Reversal, ReversalUpdate
from switch.providers.base import NoAnswer, NotSent, OperatorAnswer, TopUp
from switch.providers.link import OperatorPool
from switch.wire import Dialect

log = logging.getLogger("airswitch.topup")

TOP_UP, BALANCE_INQUIRY, OPERATOR_INQUIRY = "000000", "310000", "300000"
NETWORK_CODES = {"001": "sign-on", "002": "sign-off", "301": "echo"}

# Field 39 values (INTERFACES.md 1.6).
APPROVED, DECLINED, INVALID_TXN, INVALID_AMOUNT, INVALID_MSISDN = "00", "05", "12", "13", "14"
FORMAT_ERROR, NOT_PERMITTED, UNAVAILABLE, NO_ROUTE, DUPLICATE, MALFUNCTION = "30", "57", "91", "92", "94", "96"
INSUFFICIENT_FLOAT = "51"


def response_mti(mti: str) -> str:
    """0200 -> 0210, 0800 -> 0810; a repeat (0201) is answered as its original (0210)."""
    return mti[:2] + str(int(mti[2]) + 1) + "0"


def is_request(mti: str) -> bool:
    """ISO 8583 message function (3rd digit): 0 request, 2 advice, 4 notification."""
    return len(mti) == 4 and mti.isdigit() and mti[2] in "024"


def mask_card(pan: str | None) -> str | None:
    if not pan:
        return None
    if len(pan) < 13:
        return "*" * len(pan)
    return pan[:6] + "*" * (len(pan) - 10) + pan[-4:]


def read_tlv(field_48: str | None) -> dict[str, str]:
    """Field 48 private TLV: tag 2 chars, length 3 digits, value. Reads what parses."""
    tags: dict[str, str] = {}
    if not field_48:
        return tags
    i = 0
    while i + 5 <= len(field_48):
        tag, size = field_48[i:i + 2], field_48[i + 2:i + 5]
        if not size.isdigit():
            break
        end = i + 5 + int(size)
        if end > len(field_48):
            break
        tags[tag] = field_48[i + 5:end]
        i = end
    return tags


def write_tlv(tags: dict[str, str]) -> str:
    return "".join(f"{tag}{len(value):03d}{value}" for tag, value in tags.items() if value is not None)


class TopUpFlow:
    def __init__(self, config: SwitchConfig, dialect: Dialect, router: Router, journal: Journal,
                 dedupe: DedupeWindow, operators: dict[str, OperatorPool]):
        self.config = config
        self.dialect = dialect
        self.router = router
        self.journal = journal
        self.dedupe = dedupe
        self.operators = operators
        self.calendar = BusinessCalendar(config.business_day.cutover, config.business_day.timezone)
        rules = dialect.rules
        self._mandatory: dict[str, list[str]] = rules["mandatory"]
        self._numeric = frozenset(rules["numeric_fields"])
        self._echo_financial: list[str] = rules["echo"]["financial"]
        self._echo_network: list[str] = rules["echo"]["network"]
        self.in_flight = 0
        # Top-ups still in flight by dedupe key, so a 0201 can wait for the original's answer.
        self._pending: dict[str, asyncio.Future] = {}
        self._background: set[asyncio.Task] = set()
        self.rules = AcquirerRules()
        self.ledger: FloatLedger | None = None  # set by the switch when any payer is prepaid
        self.reversals = None  # AcquirerReversals, set by the switch
        self.on_reversal_stored = None  # wakes the store-and-forward worker, set by the switch

    def pending_for(self, acquirer_id: str, tracking_code: str, business_day: date) -> asyncio.Future | None:
        """The answer-to-be of a top-up still in flight in this process, if it is."""
        return self._pending.get(dedupe_key(acquirer_id, tracking_code, business_day))

    def reconfigure(self, config: SwitchConfig, router: Router) -> None:
        """A reloaded configuration: routes and amount rules apply to the next request."""
        self.config = config
        self.router = router

    # -- entry -----------------------------------------------------------------
    async def handle(self, request: dict, acquirer: AcquirerConfig, signed_on: bool,
                     terminal: TerminalConfig | None = None) -> dict | None:
        mti = request["t"]
        if mti == "0800":
            return self.network(request)
        if acquirer.sign_on_required and not signed_on:
            return self.answer(request, UNAVAILABLE)
        if mti in ("0200", "0201"):
            code = request.get("3")
            if code == TOP_UP:
                return await self.top_up(request, acquirer, float_account(acquirer, terminal))
            if code == BALANCE_INQUIRY and mti == "0200":
                return await self.balance_inquiry(request, acquirer, float_account(acquirer, terminal))
            if code is None:
                return self.answer(request, FORMAT_ERROR)
        elif mti == "0100" and request.get("3") == OPERATOR_INQUIRY:
            return self.operator_inquiry(request, acquirer)
        elif mti in ("0400", "0420", "0421") and self.reversals is not None:
            return await self.reversals.handle(request, acquirer)
        return self.answer(request, INVALID_TXN)

    def network(self, request: dict) -> dict:
        missing = self.format_problem(request, "0800")
        code = FORMAT_ERROR if missing else (APPROVED if request["70"] in NETWORK_CODES else INVALID_TXN)
        answer = {key: request[key] for key in self._echo_network if key in request}
        answer["t"] = "0810"
        answer["39"] = code
        return answer

    # -- the top-up --------------------------------------------------------------
    async def top_up(self, request: dict, acquirer: AcquirerConfig, account: str | None = None) -> dict:
        received_at = utcnow()
        started = time.perf_counter()
        txn_id = uuid.uuid4().hex
        business_day = self.calendar.day_of(received_at)

        problem = self.format_problem(request, "0200/000000")
        if problem:
            log.info("txn %s from %s: format error (%s): 30", txn_id, acquirer.name, problem)
            return await self.refuse(request, txn_id, received_at, business_day, started, FORMAT_ERROR, None)
        if request["32"] != acquirer.institution_id:
            log.warning("txn %s: field 32 %s is not %s's (%s): 57", txn_id, request["32"],
                        acquirer.name, acquirer.institution_id)
            return await self.refuse(request, txn_id, received_at, business_day, started, NOT_PERMITTED, None)
        key = dedupe_key(request["32"], request["37"], business_day)

        if request["t"] == "0201":
            replay = await self.repeat(request, key, business_day)
            if replay is not None:
                return replay
        if self.in_flight >= self.config.max_in_flight:
            # Overload: turned away before it uses its key, so the acquirer may send it again.
            return await self.refuse(request, txn_id, received_at, business_day, started, UNAVAILABLE, None)
        if not await self.dedupe.claim(key):
            return await self.refuse(request, txn_id, received_at, business_day, started, DUPLICATE, None)

        self.in_flight += 1
        pending = asyncio.get_running_loop().create_future()
        self._pending[key] = pending
        answer = None
        try:
            answer = await self._route_and_send(request, acquirer, account, txn_id, received_at, business_day,
                                                started)
            return answer
        finally:
            self.in_flight -= 1
            del self._pending[key]
            pending.set_result(answer)

    async def _route_and_send(self, request: dict, acquirer: AcquirerConfig, account: str | None, txn_id: str,
                              received_at, business_day: date, started: float) -> dict:
        amount = int(request["4"])
        currency = request["49"]
        operator_id: str | None = None
        try:
            msisdn = normalise_msisdn(request["103"], acquirer.country)
        except InvalidMsisdn as exc:
            msisdn, refusal = request["103"], INVALID_MSISDN
            log.info("txn %s: MSISDN %r: %s: 14", txn_id, request["103"], exc)
        else:
            route = self.router.route(msisdn)
            if route is None:
                refusal = NO_ROUTE
            else:
                operator_id = route.operator
                refusal = None if self.router.check_amount(operator_id, amount, currency) else INVALID_AMOUNT
                if refusal is None:
                    refusal = self.rules.check_and_reserve(acquirer, operator_id, amount, msisdn, business_day)
        reserved = refusal is None  # holds its place in the acquirer's daily total and frequency count

        # The operator and the switch's reference there are fixed before the intake is journaled, so that
        # after a crash the request can be named in a reversal.
        pool = self.operators.get(operator_id) if refusal is None else None
        topup = None
        if pool is not None:
            topup = TopUp(txn_id=txn_id, acquirer_id=request["32"], tracking_code=request["37"], msisdn=msisdn,
                          amount=amount, currency=currency, stan=pool.next_reference(), sent_at=utcnow())
        intake = self.intake(request, txn_id, received_at, business_day, msisdn, uses_key=True, topup=topup,
                             operator_id=operator_id if topup is not None else None)
        try:
            if not await self.journal.record_intake(intake):
                # Another process (or a restart) already used this key today: the journal is the authority.
                return await self.refuse(request, uuid.uuid4().hex, received_at, business_day, started,
                                         DUPLICATE, msisdn)
        except JournalError as exc:
            log.error("txn %s: journal could not take the intake (%s): 96", txn_id, exc)
            if reserved:
                self.rules.release(acquirer, amount, msisdn, business_day)
            # The intake may still have committed after our wait ended: close it so it does not stay open.
            return await self.finish(request, txn_id, received_at, started, "refused", MALFUNCTION, operator_id)

        if refusal is not None:
            return await self.finish(request, txn_id, received_at, started, "refused", refusal, operator_id)
        if account is not None:
            refusal = await self.hold_float(account, txn_id, operator_id, amount)
            if refusal is not None:
                self.rules.release(acquirer, amount, msisdn, business_day)
                return await self.finish(request, txn_id, received_at, started, "refused", refusal, operator_id)
        try:
            if pool is None:
                raise NotSent(f"operator {operator_id} is routed to but not configured")
            operator_answer = await pool.top_up(topup)
        except NotSent as exc:
            log.warning("txn %s: %s: 91", txn_id, exc)
            self.rules.release(acquirer, amount, msisdn, business_day)
            await self.settle_float(account, txn_id, approved=False)
            return await self.finish(request, txn_id, received_at, started, "declined", UNAVAILABLE, operator_id)
        except NoAnswer as exc:
            # Unknown outcome: the operator may have credited. The reversal is stored with the outcome,
            # before the acquirer hears 91, and the forwarder repeats it until the operator answers.
            log.warning("txn %s: %s: 91, outcome unknown, reversal queued", txn_id, exc)
            reversal = Reversal(txn_id=txn_id, operator_id=operator_id, reason="unknown_outcome",
                                created_at=utcnow())
            # The float stays held until the reversal settles (the forwarder releases it then).
            return await self.finish(request, txn_id, received_at, started, "unknown", UNAVAILABLE, operator_id,
                                     reversal=reversal)

        state = "approved" if operator_answer.response_code == APPROVED else "declined"
        if state != "approved":
            self.rules.release(acquirer, amount, msisdn, business_day)
        await self.settle_float(account, txn_id, approved=state == "approved")
        return await self.finish(request, txn_id, received_at, started, state, operator_answer.response_code,
                                 operator_id, operator_answer)

    # -- prepaid float --------------------------------------------------------------
    async def hold_float(self, account: str, txn_id: str, operator_id: str, amount: int) -> str | None:
        """Reserve amount + fee - commission on the payer's float; the refusal code, or None."""
        pricing = self.config.pricing.get(operator_id)
        debit = Pricing(pricing.fee_fixed, pricing.fee_percent_bp, pricing.commission_bp).float_debit(amount) \
            if pricing else amount
        try:
            await self.ledger.hold(account, txn_id, debit)
        except InsufficientFloat:
            log.info("txn %s: float %s cannot cover %d: 51", txn_id, account, debit)
            return INSUFFICIENT_FLOAT
        except LedgerError as exc:
            log.error("txn %s: float %s unavailable (%s): 96", txn_id, account, exc)
            try:
                await self.ledger.release(txn_id)   # the hold may have committed after our wait ended
            except LedgerError as release_error:
                log.critical("txn %s: possible hold on %s not released (%s): reconcile", txn_id, account,
                             release_error)
            return MALFUNCTION
        return None

    async def settle_float(self, account: str | None, txn_id: str, approved: bool) -> None:
        """Capture the hold on approval, release it otherwise. A failure here is logged for reconciliation:
        the top-up's outcome is already decided by the operator."""
        if account is None:
            return
        try:
            if approved:
                await self.ledger.capture(txn_id)
            else:
                await self.ledger.release(txn_id)
        except LedgerError as exc:
            log.critical("txn %s: float %s not %s (%s): reconcile the float by hand", txn_id, account,
                         "captured" if approved else "released", exc)

    async def balance_inquiry(self, request: dict, acquirer: AcquirerConfig, account: str | None) -> dict:
        """0200 with 3 = 310000: the payer's float balance in field 54."""
        received_at = utcnow()
        started = time.perf_counter()
        txn_id = uuid.uuid4().hex
        business_day = self.calendar.day_of(received_at)
        if self.format_problem(request, "0200/310000"):
            return await self.refuse(request, txn_id, received_at, business_day, started, FORMAT_ERROR, None)
        if request["32"] != acquirer.institution_id or account is None:
            return await self.refuse(request, txn_id, received_at, business_day, started, NOT_PERMITTED, None)
        if not await self.dedupe.claim(dedupe_key(request["32"], request["37"], business_day)):
            return await self.refuse(request, txn_id, received_at, business_day, started, DUPLICATE, None)
        intake = self.intake(request, txn_id, received_at, business_day, None, uses_key=True)
        try:
            if not await self.journal.record_intake(intake):
                return await self.refuse(request, uuid.uuid4().hex, received_at, business_day, started,
                                         DUPLICATE, None)
            balance = await self.ledger.balance(account)
            await self.journal.record_outcome(Outcome(
                txn_id=txn_id, ended_at=utcnow(), state="inquiry", response_code=APPROVED, operator_id=None,
                operator_ref=None, approval_code=None, operator_code=None,
                latency_ms=(time.perf_counter() - started) * 1000.0))
        except (JournalError, LedgerError) as exc:
            log.error("balance inquiry of %s failed: %s: 96", account, exc)
            return await self.finish(request, txn_id, received_at, started, "refused", MALFUNCTION, None)
        answer = self.answer(request, APPROVED)
        answer["54"] = additional_amount("01", balance.balance) + additional_amount("02", balance.available)
        return answer

    async def float_reversed(self, txn_id: str) -> bool:
        """A reversal settled at the operator: give the payer back what the top-up took or held.
        False when the ledger could not be reached: the forwarder tries again."""
        if self.ledger is None:
            return True
        try:
            await self.ledger.refund(txn_id)            # it was captured (an approved top-up reversed)
        except UnknownHold:
            return True                                 # not paid from a float
        except LedgerUnavailable as exc:
            log.error("txn %s: float not returned yet (%s)", txn_id, exc)
            return False
        except LedgerError:
            try:
                await self.ledger.release(txn_id)       # it was only held (an unknown outcome)
            except LedgerError as exc:
                log.error("txn %s: float not returned yet (%s)", txn_id, exc)
                return False
        return True

    def operator_inquiry(self, request: dict, acquirer: AcquirerConfig) -> dict:
        """0100 with 3 = 300000: which operator serves the number and what amounts it takes."""
        if self.format_problem(request, "0100"):
            return self.answer(request, FORMAT_ERROR)
        if request["32"] != acquirer.institution_id:
            return self.answer(request, NOT_PERMITTED)
        try:
            msisdn = normalise_msisdn(request["103"], acquirer.country)
        except InvalidMsisdn:
            return self.answer(request, INVALID_MSISDN)
        route = self.router.route(msisdn)
        if route is None:
            return self.answer(request, NO_ROUTE)
        if acquirer.allowed_operators and route.operator not in acquirer.allowed_operators:
            return self.answer(request, NOT_PERMITTED)
        answer = self.answer(request, APPROVED)
        rule = self.router.amount_rule(route.operator)
        if rule is None:
            amounts = ""
        elif rule.amounts is not None:
            amounts = ",".join(str(a) for a in sorted(rule.amounts))
        else:
            amounts = f"{rule.minimum}-{rule.maximum}/{rule.step or 1}"
        answer["44"] = route.operator
        answer["48"] = write_tlv({"OP": route.operator, "AM": amounts})
        return answer

    async def repeat(self, request: dict, key: str, business_day: date) -> dict | None:
        """A 0201 gets its original's answer again; None when there is no original (process as 0200)."""
        pending = self._pending.get(key)
        if pending is not None:
            original_answer = await asyncio.shield(pending)
            if original_answer is None:
                return self.answer(request, MALFUNCTION)
            if original_answer.get("4") != request["4"] or \
                    self._msisdn_of(original_answer.get("103", ""), request["32"]) != self._msisdn_of(request["103"], request["32"]):
                return self.answer(request, DUPLICATE)
            return self._replay(request, original_answer.get("39", MALFUNCTION), original_answer.get("38"),
                                original_answer.get("44"), read_tlv(original_answer.get("48")).get("OR"))
        try:
            original = await self.journal.find(request["32"], request["37"], business_day)
        except JournalError as exc:
            log.error("0201 %s: journal unavailable (%s): 91", request["37"], exc)
            return self.answer(request, UNAVAILABLE)   # retryable: the acquirer repeats again
        if original is None:
            return None
        if original.amount != int(request["4"]) or original.msisdn != self._msisdn_of(request["103"], request["32"]):
            return self.answer(request, DUPLICATE)
        if original.response_code is None:
            # Held by a process that has not finished it (or died mid-flight): not known yet.
            return self.answer(request, UNAVAILABLE)
        return self._replay(request, original.response_code, original.approval_code, original.operator_id,
                            original.operator_ref)

    def _msisdn_of(self, raw: str, acquirer_id: str | None = None) -> str:
        """The number as the journal stores it (normalised when it can be), for comparing repeats."""
        country = next((a.country for a in self.config.acquirers if a.institution_id == acquirer_id), "IR")
        try:
            return normalise_msisdn(raw, country)
        except InvalidMsisdn:
            return raw

    def _replay(self, request, code, approval_code, operator_id, operator_ref) -> dict:
        answer = self.answer(request, code)
        if code == APPROVED:
            answer["38"] = approval_code or "000000"
            answer["44"] = operator_id or ""
            answer["48"] = write_tlv({"OR": operator_ref or ""})
        return answer

    # -- journal and answers -------------------------------------------------------
    async def finish(self, request: dict, txn_id: str, received_at, started: float, state: str, code: str,
                     operator_id: str | None, operator_answer: OperatorAnswer | None = None,
                     reversal: Reversal | None = None) -> dict:
        """Journal the outcome, then answer. An approval never leaves before its record is durable."""
        outcome = Outcome(
            txn_id=txn_id, ended_at=utcnow(), state=state, response_code=code, operator_id=operator_id,
            operator_ref=operator_answer.operator_ref if operator_answer else None,
            approval_code=approval_code(operator_answer) if code == APPROVED else None,
            operator_code=operator_answer.operator_code if operator_answer else None,
            latency_ms=(time.perf_counter() - started) * 1000.0,
        )
        try:
            await self.journal.record_outcome(outcome, reversal)
        except JournalError as exc:
            log.critical("txn %s: outcome %s/%s NOT journaled in time (%s): answering 96", txn_id, state, code, exc)
            if state == "approved":
                # The operator credited, the acquirer hears 96: undo the credit. If the approval still lands
                # later, this later row decides the state, and the reversal is stored with it.
                await self._compensate(txn_id, operator_id, operator_answer)
            return self.answer(request, MALFUNCTION)
        answer = self.answer(request, code)
        if code == APPROVED:
            answer["38"] = outcome.approval_code
            answer["44"] = operator_id
            answer["48"] = write_tlv({"OR": outcome.operator_ref or ""})
        return answer

    async def _compensate(self, txn_id: str, operator_id: str | None, operator_answer: OperatorAnswer | None) -> None:
        unknown = Outcome(txn_id=txn_id, ended_at=utcnow(), state="unknown", response_code=MALFUNCTION,
                          operator_id=operator_id, operator_ref=operator_answer.operator_ref if operator_answer else None,
                          approval_code=None, operator_code=operator_answer.operator_code if operator_answer else None,
                          latency_ms=0.0)
        try:
            await self.journal.record_outcome(unknown, Reversal(txn_id=txn_id, operator_id=operator_id or "",
                                                                reason="unknown_outcome", created_at=utcnow()))
        except JournalError as exc:
            # Nothing is recorded: the intake has no outcome, and crash recovery reverses it as an orphan.
            log.critical("txn %s: compensating reversal not stored either (%s): left to orphan recovery", txn_id, exc)

    async def refuse(self, request: dict, txn_id: str, received_at, business_day: date, started: float,
                     code: str, msisdn: str | None) -> dict:
        """Turned away before any operator and without using the dedupe key."""
        intake = self.intake(request, txn_id, received_at, business_day, msisdn, uses_key=False)
        outcome = Outcome(txn_id=txn_id, ended_at=utcnow(), state="refused", response_code=code,
                          operator_id=None, operator_ref=None, approval_code=None, operator_code=None,
                          latency_ms=(time.perf_counter() - started) * 1000.0)
        try:
            await self.journal.record_refusal(intake, outcome)
        except JournalError as exc:
            log.error("txn %s: refusal %s not journaled: %s", txn_id, code, exc)
        return self.answer(request, code)

    def record_late_answer(self, operator_id: str, topup: TopUp, answer: OperatorAnswer) -> None:
        """An operator answered after the switch gave up (the acquirer got 91): journal it against its
        transaction. The state does not go back: the reversal stored with the 91 undoes any credit."""
        task = asyncio.get_running_loop().create_task(self._journal_late_answer(operator_id, topup, answer))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _journal_late_answer(self, operator_id: str, topup: TopUp, answer: OperatorAnswer) -> None:
        late = Outcome(txn_id=topup.txn_id, ended_at=utcnow(), state="unknown", response_code=UNAVAILABLE,
                       operator_id=operator_id, operator_ref=answer.operator_ref, approval_code=None,
                       operator_code=answer.operator_code, latency_ms=0.0, event="late_answer")
        try:
            await self.journal.record_outcome(late)
            if answer.response_code != APPROVED:
                return
            current = await self.journal.transaction(topup.txn_id)
            if current is not None and current.state == "reversed":
                # The reversal was settled before this credit arrived (the operator found nothing to
                # reverse then): reverse again, now that there is something to undo.
                log.warning("txn %s: late approval after its reversal was settled: reversing again", topup.txn_id)
                await self.journal.record_reversal_update(
                    ReversalUpdate(txn_id=topup.txn_id, state="pending", attempts=0, next_attempt_at=utcnow(),
                                   last_error="late approval after the reversal", operator_code=None),
                    msgspec.structs.replace(late, ended_at=utcnow(), event="reversal_reopened"))
                if self.on_reversal_stored is not None:
                    self.on_reversal_stored()
        except JournalError as exc:
            log.critical("txn %s: late answer %s from %s NOT journaled: %s", topup.txn_id, answer.operator_code,
                         operator_id, exc)

    def intake(self, request: dict, txn_id: str, received_at, business_day: date, msisdn: str | None,
               uses_key: bool, topup: TopUp | None = None, operator_id: str | None = None) -> Intake:
        amount = request.get("4")
        return Intake(
            txn_id=txn_id, received_at=received_at, business_day=business_day, mti=request["t"],
            acquirer_id=request.get("32", ""), tracking_code=request.get("37", ""), stan=request.get("11", ""),
            transmitted_at=request.get("7"), terminal_id=request.get("41"), merchant_id=request.get("42"),
            card_masked=mask_card(request.get("2")), msisdn=msisdn or request.get("103"),
            amount=int(amount) if amount and amount.isdigit() else None, currency=request.get("49"),
            channel=read_tlv(request.get("48")).get("CH"), uses_key=uses_key,
            routed_operator=operator_id, operator_stan=topup.stan if topup else None,
            operator_sent_at=topup.sent_at if topup else None,
        )

    def answer(self, request: dict, code: str) -> dict:
        answer = {key: request[key] for key in self._echo_financial if key in request}
        answer["t"] = response_mti(request["t"])
        answer["39"] = code
        return answer

    def format_problem(self, request: dict, kind: str) -> str | None:
        """The first mandatory field that is missing or malformed, described; None if all is well."""
        for field in self._mandatory[kind]:
            value = request.get(field)
            if value is None or value == "":
                return f"field {field} missing"
            if field in self._numeric and not value.isdigit():
                return f"field {field} not numeric"
        return None


def float_account(acquirer: AcquirerConfig, terminal: TerminalConfig | None) -> str | None:
    """The float a top-up is paid from: the terminal's agent's, else a prepaid acquirer's, else none."""
    if terminal is not None and terminal.account:
        return terminal.account
    if acquirer.prepaid:
        return acquirer.account or acquirer.institution_id
    return None


def additional_amount(amount_type: str, amount: int, currency: str = "364") -> str:
    """One field-54 entry: account type 00, amount type, currency, C/D, 12 digits."""
    return f"00{amount_type}{currency}{'C' if amount >= 0 else 'D'}{abs(amount):012d}"


def approval_code(answer: OperatorAnswer | None) -> str:
    """Field 38 is an6: the operator's code when it fits, else one from its reference."""
    code = (answer.approval_code or "") if answer else ""
    if len(code) == 6:
        return code
    return (code or (answer.operator_ref if answer else "") or "000000")[-6:].rjust(6, "0")
