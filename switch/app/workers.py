"""`airswitch serve --workers N`: N switch processes sharing the listening ports.

The parent starts N children, each a whole switch (`serve --reuse-port`) bound to
the same ports with SO_REUSEPORT, so the kernel spreads acquirer connections over
them. It forwards SIGTERM/SIGINT (graceful stop) and SIGHUP (reload) to every
child, and restarts a child that dies. Correctness across processes rests on
what they share: the journal's unique key (dedupe), its advisory lock (one
store-and-forward lead) and the float ledger in Postgres; Redis as the dedupe
window when configured. Each child knows its index of N (`--worker-share I/N`) and
draws its operator STANs from its own slice, so two workers never send an operator
the same STAN at the same time.

Each worker's admin server (when `[admin]` is on) listens on the admin port + its index, so
Prometheus scrapes every worker as its own target and a health check asks each one
(docs/decisions.md, "Metrics of several workers"). An admin reload signals this supervisor,
which passes SIGHUP on to every worker.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time

log = logging.getLogger("airswitch.app.workers")

RESTART_DELAY = 1.0     # seconds before a dead worker is started again
STOP_TIMEOUT = 30.0     # seconds the workers get to drain on stop


def supervise(config: str, workers: int, log_level: str, log_format: str = "text") -> int:
    def command(index: int) -> list[str]:
        return [sys.executable, "-m", "switch.app.cli", "--log-level", log_level, "--log-format", log_format,
                "serve", "--config", config, "--reuse-port", "--worker-share", f"{index}/{workers}"]

    children: list[subprocess.Popen] = [subprocess.Popen(command(index)) for index in range(workers)]
    stopping = False

    def forward(signum, _frame) -> None:
        nonlocal stopping
        if signum in (signal.SIGTERM, signal.SIGINT):
            stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    log.warning("airswitch: %d workers started (pids %s)", workers, ", ".join(str(c.pid) for c in children))
    while not stopping:
        time.sleep(0.5)
        for index, child in enumerate(children):
            if child.poll() is not None and not stopping:
                log.error("worker %d (pid %d) exited with %s; restarting it", index, child.pid, child.returncode)
                time.sleep(RESTART_DELAY)
                children[index] = subprocess.Popen(command(index))
    deadline = time.monotonic() + STOP_TIMEOUT
    for child in children:
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
    return 0
