"""The admin server: a starlette app on uvicorn, served on the switch's own event loop.

`AdminServer.start()` binds the socket itself (so port 0 works and the port is known at once)
and runs `uvicorn.Server.serve()` as a task; `stop()` asks it to exit and waits (uvicorn stops
listening, lets open requests finish within SHUTDOWN_TIMEOUT, then cancels them). Uvicorn is
kept away from the process's signals (the switch owns SIGINT, SIGTERM and SIGHUP) and from its
logging configuration.

Routes: /healthz and /readyz (no token: load balancers ask them), /metrics (no token: Prometheus
scrapes it; bind the admin port to an address only they reach), and the JSON API (api.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from switch.admin import console
from switch.admin.api import ROUTES, json
from switch.admin.metrics import RequestMetrics, SwitchCollector
from switch.journal import JournalError

log = logging.getLogger("airswitch.admin")

READY_TIMEOUT = 2.0      # seconds the journal gets to answer /readyz
SHUTDOWN_TIMEOUT = 5.0   # seconds open admin requests get at shutdown
STARTUP_TIMEOUT = 10.0
MAX_CONCURRENCY = 64     # admin connections at once; beyond, uvicorn answers 503 at once


class _Uvicorn(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):
        # uvicorn would install its own SIGINT/SIGTERM handlers for the whole process; the switch has them.
        yield


class AdminServer:
    """The admin HTTP server of one switch process. `switch` is switch.app.server.Switch (not
    imported here, so that it may import this module)."""

    def __init__(self, switch, host: str, port: int, request_metrics: RequestMetrics,
                 supervised: bool = False) -> None:
        self.switch = switch
        self.host = host
        self.requested_port = port
        self.supervised = supervised    # one worker of `serve --workers N`
        self.metrics = request_metrics  # the engine's observer, given to it when the switch was built
        self.collector = SwitchCollector(switch, self.metrics)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)
        ProcessCollector(registry=self.registry)
        self.app = Starlette(routes=[Route("/healthz", healthz), Route("/readyz", readyz),
                                     Route("/metrics", metrics), *ROUTES, console.mount(self)],
                             exception_handlers={HTTPException: _problem})
        self.app.state.admin = self
        self._socket: socket.socket | None = None
        self._server: _Uvicorn | None = None
        self._task: asyncio.Task | None = None

    @property
    def port(self) -> int:
        return self._socket.getsockname()[1]

    async def start(self) -> None:
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.requested_port))
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self._socket = sock
        config = uvicorn.Config(self.app, lifespan="off", log_config=None, access_log=False, http="h11",
                                limit_concurrency=MAX_CONCURRENCY, timeout_graceful_shutdown=SHUTDOWN_TIMEOUT,
                                server_header=False)
        self._server = _Uvicorn(config)
        self._task = asyncio.get_running_loop().create_task(self._server.serve(sockets=[sock]), name="admin http")
        deadline = asyncio.get_running_loop().time() + STARTUP_TIMEOUT
        while not self._server.started:
            if self._task.done():
                self._task.result()   # raises what stopped it
                raise RuntimeError("the admin server stopped during start-up")
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError("the admin server did not start")
            await asyncio.sleep(0.01)
        log.info("admin server on http://%s:%d", self.host, self.port)

    async def stop(self) -> None:
        if self._task is None:
            return
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), SHUTDOWN_TIMEOUT + 2)
        except asyncio.TimeoutError:
            self._task.cancel()
        except Exception:
            log.exception("admin server stopped with an error")
        self._task = None


async def _problem(request: Request, exc: HTTPException) -> Response:
    response = json({"status": exc.status_code, "detail": exc.detail}, exc.status_code)
    for name, value in (exc.headers or {}).items():
        response.headers[name] = value
    return response


async def healthz(request: Request) -> Response:
    """200 while the process answers."""
    return PlainTextResponse("ok\n")


async def readyz(request: Request) -> Response:
    """200 when the journal reads and takes records and every operator that routes lead to has a live link;
    503 with the reasons otherwise."""
    reasons = await readiness(request.app.state.admin.switch)
    if reasons:
        return json({"ready": False, "reasons": reasons}, 503)
    return json({"ready": True, "reasons": []})


async def readiness(switch) -> list[str]:
    reasons = []
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            await switch.journal.ping()
    except JournalError as exc:
        reasons.append(f"journal: {exc}")
    except TimeoutError:
        reasons.append(f"journal: no answer within {READY_TIMEOUT:.0f}s")
    for operator_id in sorted(switch.core.router.operators):
        pool = switch.providers.get(operator_id)
        if pool is None:
            reasons.append(f"operator {operator_id}: routes lead to it but it is not configured")
        elif not pool.is_up:
            reasons.append(f"operator {operator_id}: no live link")
    return reasons


async def metrics(request: Request) -> Response:
    """Prometheus text format (see metrics.py and docs/metrics.md)."""
    admin = request.app.state.admin
    await admin.collector.refresh()
    return Response(generate_latest(admin.registry), media_type=CONTENT_TYPE_LATEST)
