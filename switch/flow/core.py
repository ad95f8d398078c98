"""The transaction core: every channel's requests, by kind, through the participants that
make the money path. Read the chains below top to bottom; each step is one module in
`participants/`, run by `engine.Engine`.

A new product adds a participant to a chain (or a chain); a new channel only builds
`Request`s and reads `Answer`s (switch.flow.messages).
"""

from __future__ import annotations

import time
from typing import Callable, Mapping

from routing import Router
from switch.clock import BusinessCalendar
from switch.app.config import SwitchConfig
from switch.errors import LocalProtocolError
from switch.flow.engine import Chain, EndObserver, Engine
from switch.flow.in_flight import InFlight
from switch.flow.inquiry import inquire
from switch.flow.messages import Answer, Kind, Request
from switch.flow.participants.admission import Admission
from switch.flow.participants.balance import BalanceLookup
from switch.flow.participants.dedupe import Dedupe, DedupeWindow
from switch.flow.participants.float_hold import FloatHold
from switch.flow.participants.journaling import Journaling
from switch.flow.participants.limits import AcquirerRules, Limits
from switch.flow.participants.provider_call import ProviderCall, ProviderReference
from switch.flow.participants.repeat import Repeat
from switch.flow.participants.route import Route
from switch.flow.participants.validate import Validate
from switch.flow.queueing import IntakeQueue
from switch.flow.reversals import AcquirerReversals
from switch.journal import Journal
from switch.providers.base import Provider


class TransactionCore:
    def __init__(self, config: SwitchConfig, router: Router, journal: Journal, window: DedupeWindow,
                 providers: Mapping[str, Provider], float_hold: FloatHold,
                 on_reversal_stored: Callable[[], None], on_end: EndObserver | None = None) -> None:
        self.journal = journal
        self.window = window
        self.providers = providers
        self.float_hold = float_hold
        self.calendar = BusinessCalendar(config.business_day.cutover, config.business_day.timezone)
        self.engine = Engine(journal, self.calendar, on_end)
        self.in_flight = InFlight()
        self.intakes = IntakeQueue()
        self.admission = Admission(self.in_flight, config.max_in_flight, self.intakes, config.max_queue_delay)
        self.rules = AcquirerRules()
        self.reversals = AcquirerReversals(self.engine, journal, self.in_flight, config.reversals.window_days,
                                           on_reversal_stored)
        self.reconfigure(config, router)

    def reconfigure(self, config: SwitchConfig, router: Router) -> None:
        """A reloaded configuration: routes, amount rules, caps and pricing apply to the next request."""
        self.router = router
        self.admission.max_in_flight = config.max_in_flight
        self.admission.max_queue_delay = config.max_queue_delay
        self.float_hold.pricing = config.pricing
        self.reversals.window_days = config.reversals.window_days
        self.top_up = Chain(
            Validate(),                                   # 30, 57                  before the key
            Repeat(self.journal, self.in_flight),         # a 0201's replay
            self.admission,                               # 91 at once, nothing recorded: overloaded
            Dedupe(self.window, self.in_flight),          # 94 from the window
            Route(router, self.providers),                # 14, 92, 13              held until the key
            Limits(self.rules),                           # 57, 61, 65              held until the key
            ProviderReference(),                          # the reference at the provider, fixed
            Journaling(self.journal, self.intakes),       # intake: the key (94); outcome at the end
            self.float_hold,                              # 51; capture or release at the end
            ProviderCall(),                               # send, await: 00, 05..., 91 (unknown: reversal)
        )
        self.balance = Chain(
            Validate(),
            Dedupe(self.window, self.in_flight),
            Journaling(self.journal, self.intakes),
            BalanceLookup(self.float_hold.ledger),
        )

    async def handle(self, request: Request) -> Answer:
        kind = request.kind
        if kind is Kind.TOP_UP or kind is Kind.REPEAT:
            return await self.engine.run(request, self.top_up)
        if kind is Kind.BALANCE:
            return await self.engine.run(request, self.balance)
        started = time.perf_counter()
        if kind is Kind.INQUIRY:
            answer = inquire(request, self.router)
        elif kind is Kind.REVERSAL:
            answer = await self.reversals.handle(request)
        else:
            raise LocalProtocolError(f"no chain for requests of kind {kind}")
        if self.engine.on_end is not None:   # the engine reports the chains' answers itself
            self.engine.on_end(request, answer, None, time.perf_counter() - started, None)
        return answer
