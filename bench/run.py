"""One load test, end to end, every party in its own process on this machine.

It owns the run: the run directory `bench/runs/<timestamp>/`, the switch configuration generated
into it (journal in the real Postgres under a fresh schema `bench_<timestamp>`, the demo's routes and
ported numbers beside it, every operator on an opa87 simulator), the child processes (the bank87
responder for the ceiling, the operator simulators, `airswitch serve`, the load generator for each
phase), waiting for each to be ready, the checks at the end (the switch's memory, every approval in
the journal) and stopping every child, whatever happens (Ctrl-C included).

Phases, in order:
1. ceiling: the load generator against the bare responder at a rate it cannot reach, to measure
   the most answers a second the load generator and a Python bank87 codec manage here;
2. warm-up: a short, low rate against the switch (links, pools and caches warm; reported, not judged);
3. `fixed`: one rate for a duration; or `search`: a step search from a start rate, one step at a
   time, until p99 exceeds the objective or any error appears.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import random
import re
import shlex
import shutil
import signal
import socket
import string
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from bench import loadgen, report

DEFAULT_RUNS_DIR = Path("bench") / "runs"
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
DSN_ENV = "AIRSWITCH_BENCH_DSN"
DEFAULT_RATE = 1000.0
DEFAULT_DURATION = 10.0
DEFAULT_OBJECTIVE_MS = 20.0          # p99 a step of the search must stay under
DEFAULT_SEARCH_START = 500.0
DEFAULT_SEARCH_STEP = 500.0
DEFAULT_STEP_DURATION = 10.0
DEFAULT_SEARCH_MAX = 20_000.0        # the search stops here even if every step held
DEFAULT_CEILING_RATE = 20_000.0      # offered to the bare responder: more than it can answer here
DEFAULT_CEILING_DURATION = 5.0
DEFAULT_WARMUP = 2.0                 # seconds
WARMUP_RATE = 200.0                  # top-ups a second during the warm-up (or the test rate, if lower)
OPERATORS = ("MCI", "IRANCELL", "RIGHTEL")   # the demo routes' operators, each on its own simulator
OPERATOR_DIALECT = "opa87"
OPERATOR_TIMEOUT = 3.0               # seconds; the load generator's answer timeout must be longer
ACQUIRER_ID = loadgen.DEFAULT_ACQUIRER_ID
READY_TIMEOUT = 20.0                 # seconds for a child's port to accept, and for the switch's links
POLL_INTERVAL = 0.05
STOP_TIMEOUT = 20.0                  # seconds a child gets after SIGTERM (the switch drains for up to 15 s)
KILL_TIMEOUT = 5.0
LOADGEN_SLACK = 30.0                 # seconds past its duration and answer timeout before a load generator is killed
PROFILE_RATE = 100                   # py-spy samples a second
PROFILE_SLACK = 15.0                 # seconds past its duration py-spy gets to write its output
DB_TIMEOUT = 10.0                    # seconds for each journal query
LOG_TAIL = 20                        # lines of a dead child's log shown
LINK_UP = r"link {operator} -> \S+ up"   # what the switch logs (INFO) when an operator link is signed on


@dataclass
class BenchOptions:
    mode: str = "fixed"                   # "fixed" or "search"
    rate: float = DEFAULT_RATE
    duration: float = DEFAULT_DURATION
    objective_ms: float = DEFAULT_OBJECTIVE_MS
    search_start: float = DEFAULT_SEARCH_START
    search_step: float = DEFAULT_SEARCH_STEP
    step_duration: float = DEFAULT_STEP_DURATION
    search_max: float = DEFAULT_SEARCH_MAX
    ceiling: bool = True
    ceiling_rate: float = DEFAULT_CEILING_RATE
    ceiling_duration: float = DEFAULT_CEILING_DURATION
    warmup: float = DEFAULT_WARMUP
    connections: int = loadgen.DEFAULT_CONNECTIONS
    max_in_flight: int = loadgen.DEFAULT_MAX_IN_FLIGHT
    answer_timeout: float = loadgen.DEFAULT_ANSWER_TIMEOUT
    workers: int = 1
    dsn: str = field(default_factory=lambda: os.environ.get(DSN_ENV, DEFAULT_DSN))
    keep_schema: bool = False
    profile: bool = False
    runs_dir: Path = DEFAULT_RUNS_DIR
    operator_latency_ms: float = 0.0
    max_queue_delay: float | None = None   # the switch's admission objective; None: its default
    admin: bool = False                    # the admin server on (port 0), to measure what metrics cost
    command: str = ""                     # how the run was asked for, for the report


class BenchError(Exception):
    """The run could not go on (a child did not start, a load generator failed)."""


# -- child processes ---------------------------------------------------------------------------
def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the bench process dies, even by SIGKILL (Linux)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG
    except OSError:
        pass


class Child:
    def __init__(self, name: str, argv: list[str], log_path: Path | None, env: dict[str, str]):
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self._log = open(log_path, "wb") if log_path else None
        # Its own session: a Ctrl-C on the terminal reaches only the bench, which stops the children
        # in order (the switch last among the servers, after its memory was read).
        self.process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT if self._log else None,
            env=env, start_new_session=True, preexec_fn=_die_with_parent if sys.platform == "linux" else None)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-LOG_TAIL:])

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL if it does not end within STOP_TIMEOUT. Returns its exit code."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                print(f"bench: {self.name} (pid {self.pid}) did not stop within {STOP_TIMEOUT} s: killing it",
                      file=sys.stderr)
                self.process.kill()
                try:
                    self.process.wait(KILL_TIMEOUT)
                except subprocess.TimeoutExpired:
                    pass
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.process.returncode


class Children:
    """Every child of the run; `stop_all` (also on Ctrl-C) stops them newest first."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.children: list[Child] = []
        # Children import `bench` and `switch` from wherever this process found them.
        source_root = str(Path(__file__).resolve().parents[1])
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [source_root, *filter(None, [os.environ.get("PYTHONPATH")])]), "PYTHONUNBUFFERED": "1"}

    def start(self, name: str, argv: list[str], log: bool = True) -> Child:
        child = Child(name, argv, self.run_dir / f"{name}.log" if log else None, self.env)
        self.children.append(child)
        with open(self.run_dir / "commands.txt", "a") as commands:
            commands.write(f"{name}: {shlex.join(argv)}\n")
        return child

    def stop(self, child: Child) -> int | None:
        code = child.stop()
        if child in self.children:
            self.children.remove(child)
        return code

    def stop_all(self) -> None:
        for child in reversed(self.children):
            try:
                child.stop()
            except Exception as exc:  # noqa: BLE001 - one child failing to stop must not leave the others
                print(f"bench: stopping {child.name}: {exc!r}", file=sys.stderr)
        self.children.clear()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_port(child: Child, port: int, timeout: float = READY_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive():
            raise BenchError(f"{child.name} exited with {child.process.returncode} before listening on {port}:\n"
                             f"{child.log_tail()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=POLL_INTERVAL * 4):
                return
        except OSError:
            time.sleep(POLL_INTERVAL)
    raise BenchError(f"{child.name} did not listen on port {port} within {timeout} s:\n{child.log_tail()}")


def wait_links_up(child: Child, operators: tuple[str, ...], timeout: float = READY_TIMEOUT) -> None:
    """Until the switch has logged every operator's link as up (it dials them after it listens)."""
    patterns = {operator: re.compile(LINK_UP.format(operator=re.escape(operator))) for operator in operators}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive():
            raise BenchError(f"the switch exited with {child.process.returncode}:\n{child.log_tail()}")
        text = child.log_path.read_text(errors="replace")
        if all(pattern.search(text) for pattern in patterns.values()):
            return
        time.sleep(POLL_INTERVAL)
    missing = [operator for operator, pattern in patterns.items()
               if not pattern.search(child.log_path.read_text(errors="replace"))]
    raise BenchError(f"the switch's links to {', '.join(missing)} were not up within {timeout} s:\n{child.log_tail()}")


# -- memory -------------------------------------------------------------------------------------
def _vm_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _descendants(pid: int) -> list[int]:
    found, queue = [], [pid]
    while queue:
        parent = queue.pop()
        for task in Path(f"/proc/{parent}/task").glob("*/children"):
            try:
                children = [int(c) for c in task.read_text().split()]
            except OSError:
                continue
            found += children
            queue += children
    return found


def process_rss(pid: int) -> dict:
    """VmRSS of a process, and of it with its descendants (the workers of a multi-process switch)."""
    own = _vm_rss_kib(pid)
    tree = own
    processes = 1
    for child in _descendants(pid):
        try:
            tree += _vm_rss_kib(child)
            processes += 1
        except OSError:
            pass
    return {"pid": pid, "kib": own, "tree_kib": tree, "processes": processes}


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (0 once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2:].split()   # after "pid (comm) "; utime and stime are fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def postgres_pids() -> list[int]:
    """Every process named postgres on this machine (the journal's backends among them)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if stat.read_text().split(" (", 1)[1].startswith("postgres)"):
                pids.append(int(stat.parent.name))
        except (OSError, IndexError):
            continue
    return pids


class CpuMeter:
    """CPU seconds each party used between start() and stop(): where the machine's time went."""

    def __init__(self, parties: dict[str, list[int]]):
        self.parties = parties
        self._before: dict[str, float] = {}
        self._started = 0.0

    def _sample(self) -> dict[str, float]:
        sample = {name: sum(cpu_seconds(pid) for pid in pids) for name, pids in self.parties.items()}
        sample["postgres (all of this machine's)"] = sum(cpu_seconds(pid) for pid in postgres_pids())
        return sample

    def start(self) -> None:
        self._before = self._sample()
        self._started = time.monotonic()

    def stop(self) -> dict:
        wall = time.monotonic() - self._started
        after = self._sample()
        used = {name: round(after[name] - self._before.get(name, 0.0), 2) for name in after}
        return {"wall_s": round(wall, 2), "cpu_s": used,
                "cores": {name: round(seconds / wall, 2) if wall else 0.0 for name, seconds in used.items()},
                "machine_cores": os.cpu_count()}


# -- the journal ---------------------------------------------------------------------------------
def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def _journal_counts(dsn: str, schema: str, drop: bool) -> dict:
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=DB_TIMEOUT)
    try:
        approved = await conn.fetchval(
            f"SELECT count(*) FROM {_quote(schema)}.transactions WHERE response_code = '00'", timeout=DB_TIMEOUT)
        rows = await conn.fetchval(f"SELECT count(*) FROM {_quote(schema)}.transactions", timeout=DB_TIMEOUT)
        if drop:
            await conn.execute(f"DROP SCHEMA IF EXISTS {_quote(schema)} CASCADE", timeout=DB_TIMEOUT)
    finally:
        await conn.close(timeout=DB_TIMEOUT)
    return {"approved_journaled": approved, "rows": rows, "dropped": drop}


async def _drop_schema(dsn: str, schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=DB_TIMEOUT)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {_quote(schema)} CASCADE", timeout=DB_TIMEOUT)
    finally:
        await conn.close(timeout=DB_TIMEOUT)


# -- configuration --------------------------------------------------------------------------------
def _toml_string(value: str) -> str:
    return json.dumps(value)   # a JSON string of printable ASCII is a TOML basic string


def write_switch_config(run_dir: Path, listener_port: int, operator_ports: dict[str, int], dsn: str,
                        schema: str, max_queue_delay: float | None = None, admin: bool = False) -> Path:
    """The switch's configuration for this run, with the demo's routes and ported numbers beside it."""
    from switch.app.config import load_config
    from switch.resources import data_dir

    demo = data_dir("conf") / "demo"
    shutil.copyfile(demo / "routes.toml", run_dir / "routes.toml")
    shutil.copyfile(demo / "ported.csv", run_dir / "ported.csv")
    lines = [
        "# Generated by `airswitch bench` for this run only (see bench/README.md).",
        'institution_id = "99001"',
        'terminal_id = "AIRSW001"',
        *([f"max_queue_delay = {max_queue_delay}"] if max_queue_delay is not None else []),
        "",
        *(["[admin]", "port = 0", ""] if admin else []),
        "[listener]",
        'host = "127.0.0.1"',
        f"port = {listener_port}",
        "",
        "[business_day]",
        'cutover = "00:00"',
        'timezone = "Asia/Tehran"',
        "",
        "[journal]",
        'backend = "postgres"',
        f"dsn = {_toml_string(dsn)}",
        f"schema = {_toml_string(schema)}",
        "",
        "[dedupe]",
        'backend = "memory"',
        "",
        "[routing]",
        'routes = "routes.toml"',
        'ported = "ported.csv"',
        "carrier_fallback = true",
        "",
        "[[acquirers]]",
        f'institution_id = "{ACQUIRER_ID}"',
        'name = "Bench acquirer (the load generator)"',
        'allowed_addresses = ["127.0.0.1/32"]',
        'country = "IR"',
    ]
    for operator, port in operator_ports.items():
        lines += ["", "[[operators]]", f'id = "{operator}"', f'name = "{operator} (opa87 simulator)"',
                  f'dialect = "{OPERATOR_DIALECT}"', f"timeout = {OPERATOR_TIMEOUT}",
                  f'links = [{{ mode = "connect", host = "127.0.0.1", port = {port} }}]']
    path = run_dir / "airswitch.toml"
    path.write_text("\n".join(lines) + "\n")
    load_config(path)   # refuse here, with the switch's own message, rather than in a child's log
    return path


# -- the run -------------------------------------------------------------------------------------
class BenchRun:
    def __init__(self, options: BenchOptions):
        self.options = options
        started = datetime.now(timezone.utc)
        self.name = started.strftime("%Y%m%d-%H%M%S")
        self.started_at = started.isoformat(timespec="seconds")
        self.run_dir = Path(options.runs_dir) / self.name
        suffix = 1
        while self.run_dir.exists():
            suffix += 1
            self.run_dir = Path(options.runs_dir) / f"{self.name}-{suffix}"
        self.schema = "bench_" + self.run_dir.name.replace("-", "_")
        self.run_dir.mkdir(parents=True)
        self.children = Children(self.run_dir)
        self.phases: list[dict] = []
        self.notes: list[str] = []
        self._run_letter = random.SystemRandom().choice(string.ascii_uppercase)

    # -- helpers ----------------------------------------------------------------------------------
    def _load(self, label: str, port: int, rate: float, duration: float) -> dict:
        """Run the load generator as a child; its progress lines go straight to our stdout."""
        options = self.options
        out = self.run_dir / f"{label}.json"
        run_id = f"{self._run_letter}{len(self.phases):03d}"   # unique field 37 prefix per phase of this run
        print(f"\n== {label}: {rate:.0f}/s for {duration:g} s against 127.0.0.1:{port} ==", flush=True)
        child = self.children.start(f"loadgen-{label}", [
            sys.executable, "-m", "bench.loadgen", "--port", str(port), "--rate", str(rate),
            "--duration", str(duration), "--connections", str(options.connections),
            "--max-in-flight", str(options.max_in_flight), "--answer-timeout", str(options.answer_timeout),
            "--acquirer-id", ACQUIRER_ID, "--run-id", run_id, "--label", label, "--out", str(out)], log=False)
        try:
            code = child.process.wait(duration + options.answer_timeout + LOADGEN_SLACK)
        except subprocess.TimeoutExpired:
            raise BenchError(f"the load generator for {label} did not finish in time") from None
        finally:
            self.children.stop(child)
        if code != 0 or not out.exists():
            raise BenchError(f"the load generator for {label} failed (exit {code})")
        result = json.loads(out.read_text())
        self.phases.append(result)
        return result

    def _start_profiler(self, pid: int, duration: float) -> Child | None:
        py_spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
        if py_spy is None:
            self.notes.append("--profile: py-spy is not installed (pip install py-spy); no profile taken")
            return None
        return self.children.start("py-spy", [
            py_spy, "record", "--pid", str(pid), "--duration", str(max(1, int(duration))), "--rate",
            str(PROFILE_RATE), "--format", "raw", "--output", str(self.run_dir / "profile.raw"), "--nonblocking",
            "--subprocesses"])

    def _finish_profiler(self, profiler: Child | None, duration: float) -> dict | None:
        if profiler is None:
            return None
        try:
            profiler.process.wait(duration + PROFILE_SLACK)
        except subprocess.TimeoutExpired:
            self.notes.append("py-spy did not finish in time; no profile")
        self.children.stop(profiler)
        raw = self.run_dir / "profile.raw"
        if not raw.exists():
            self.notes.append(f"py-spy wrote no profile (see {profiler.log_path})")
            return None
        profile = report.summarize_profile(raw.read_text())
        (self.run_dir / "profile-top.txt").write_text(report.profile_text(profile))
        return profile

    # -- phases ----------------------------------------------------------------------------------
    def ceiling(self) -> dict:
        port = free_port()
        responder = self.children.start("responder", [sys.executable, "-m", "bench.responder", "--port", str(port)])
        wait_port(responder, port)
        try:
            return self._load("ceiling", port, self.options.ceiling_rate, self.options.ceiling_duration)
        finally:
            self.children.stop(responder)

    def start_switch(self) -> tuple[Child, int, list[Child]]:
        options = self.options
        operator_ports = {operator: free_port() for operator in OPERATORS}
        simulators = []
        for operator, port in operator_ports.items():
            simulators.append((self.children.start(f"operator-{operator}", [
                sys.executable, "-m", "switch.app.cli", "sim", "operator", "--id", operator, "--dialect",
                OPERATOR_DIALECT, "--port", str(port), "--latency-ms", str(options.operator_latency_ms)]), port))
        for simulator, port in simulators:
            wait_port(simulator, port)
        listener_port = free_port()
        config = write_switch_config(self.run_dir, listener_port, operator_ports, options.dsn, self.schema,
                                     options.max_queue_delay, options.admin)
        argv = [sys.executable, "-m", "switch.app.cli", "--log-level", "INFO", "serve", "--config", str(config)]
        if options.workers > 1:
            argv += ["--workers", str(options.workers)]
        switch = self.children.start("switch", argv)
        wait_port(switch, listener_port)
        wait_links_up(switch, OPERATORS)
        print(f"switch up (pid {switch.pid}) on 127.0.0.1:{listener_port}, journal schema {self.schema}", flush=True)
        return switch, listener_port, [simulator for simulator, _ in simulators]

    def fixed(self, port: int) -> dict:
        return self._load("fixed", port, self.options.rate, self.options.duration)

    def search(self, port: int) -> dict:
        options = self.options
        rate = options.search_start
        held: list[float] = []
        failed, failure = None, None
        while rate <= options.search_max:
            result = self._load(f"step-{rate:.0f}", port, rate, options.step_duration)
            p99 = result["latency_ms"]["p99"]
            refused = {code: n for code, n in result["codes"].items() if code != "00"}
            if result["errors"] or refused:
                failed, failure = rate, f"errors {dict(result['errors'], **refused)}"
            elif p99 is None or p99 > options.objective_ms:
                failed, failure = rate, f"p99 {p99} ms > {options.objective_ms} ms"
            if failed is not None:
                break
            held.append(rate)
            rate += options.search_step
        return {"objective_p99_ms": options.objective_ms, "held": held, "highest_held": held[-1] if held else None,
                "first_failed": failed, "failure": failure}

    # -- everything ------------------------------------------------------------------------------------
    def run(self) -> dict:
        options = self.options
        print(f"bench run {self.run_dir} (schema {self.schema}); load average {os.getloadavg()[0]:.2f}", flush=True)
        summary: dict = {"meta": self._meta()}
        switch_started = False
        try:
            if options.ceiling:
                summary["ceiling"] = self.ceiling()
            switch, port, simulators = self.start_switch()
            switch_started = True
            if options.warmup > 0:
                self._load("warmup", port, min(WARMUP_RATE, options.rate if options.mode == "fixed"
                                               else options.search_start), options.warmup)
            main_duration = options.duration if options.mode == "fixed" else options.step_duration * max(
                1, int((options.search_max - options.search_start) // options.search_step) + 1)
            profiler = self._start_profiler(switch.pid, main_duration) if options.profile else None
            meter = CpuMeter({"switch": [switch.pid, *_descendants(switch.pid)],
                              "operator simulators": [simulator.pid for simulator in simulators]})
            meter.start()
            if options.mode == "fixed":
                result = self.fixed(port)
                summary["headline"] = {"description": f"achieved at {options.rate:.0f}/s offered",
                                       "rate": result["achieved_rate"]}
            else:
                summary["search"] = search = self.search(port)
                summary["headline"] = {"description": "highest rate that held the objective",
                                       "rate": search["highest_held"]}
            summary["cpu"] = cpu = meter.stop()
            measured = [result for result in self.phases if result["label"] not in ("ceiling", "warmup")]
            cpu["cpu_s"]["load generator"] = round(sum(result.get("cpu_s", 0.0) for result in measured), 2)
            cpu["cores"]["load generator"] = round(cpu["cpu_s"]["load generator"] / cpu["wall_s"], 2)
            answered = sum(result["answered"] for result in measured)
            approved = sum(result["approved"] for result in measured)
            # The measure: the switch's CPU over what it approved; and over all it answered
            # (a shed 91 costs a little too), so that shedding cannot flatter the figure.
            cpu["switch_us_per_approval"] = round(cpu["cpu_s"]["switch"] / approved * 1e6, 1) if approved else None
            cpu["switch_us_per_answer"] = round(cpu["cpu_s"]["switch"] / answered * 1e6, 1) if answered else None
            if profiler is not None:
                if profiler.alive():
                    profiler.process.send_signal(signal.SIGINT)   # py-spy writes what it has on SIGINT
                summary["profile"] = self._finish_profiler(profiler, 0)
            summary["switch_rss"] = process_rss(switch.pid)
            self.children.stop_all()   # the load is over: the switch drains and flushes its journal
        finally:
            self.children.stop_all()
            summary["phases"] = self.phases
            summary["notes"] = self.notes
            if switch_started:
                summary["journal"] = self._journal_check()
            elif not options.keep_schema:
                self._drop_schema_quietly()
        ceiling = summary.get("ceiling")
        if ceiling and ceiling["achieved_rate"] and (summary.get("headline") or {}).get("rate"):
            summary["headline"]["ratio_of_ceiling"] = summary["headline"]["rate"] / ceiling["achieved_rate"]
        return summary

    def _journal_check(self) -> dict:
        seen = sum(result["approved"] for result in self.phases if result["label"] != "ceiling")
        check = {"schema": self.schema, "approved_seen": seen}
        try:
            check.update(asyncio.run(_journal_counts(self.options.dsn, self.schema, not self.options.keep_schema)))
        except Exception as exc:  # noqa: BLE001 - the report says why it could not count
            check["error"] = repr(exc)
        return check

    def _drop_schema_quietly(self) -> None:
        try:
            asyncio.run(_drop_schema(self.options.dsn, self.schema))
        except Exception:  # noqa: BLE001 - nothing was created if the switch never started
            pass

    def _meta(self) -> dict:
        options = self.options
        return {"run": self.run_dir.name, "run_dir": str(self.run_dir), "started_at": self.started_at,
                "command": options.command, "cpus": os.cpu_count(), "python": sys.version.split()[0],
                "load_average": f"{os.getloadavg()[0]:.2f}", "schema": self.schema,
                "objective_p99_ms": options.objective_ms,
                "options": {key: str(value) if isinstance(value, Path) else value
                            for key, value in vars(options).items() if key != "dsn"}}


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_bench(options: BenchOptions) -> int:
    # SIGTERM (and SIGINT, even when the shell started us with it ignored) ends the run through the
    # same path as Ctrl-C, so every child is stopped.
    previous = {signum: signal.signal(signum, _interrupt) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _run_and_report(options)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _run_and_report(options: BenchOptions) -> int:
    bench_run = BenchRun(options)
    try:
        summary = bench_run.run()
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nbench: interrupted; every child process is stopped", file=sys.stderr)
        return 130
    run_dir = bench_run.run_dir
    print()
    report.write_json(summary, run_dir / "report.json")
    png = report.write_png(summary, run_dir / "report.png")
    report.write_markdown(summary, run_dir / "report.md")
    report.print_table(summary)
    print(f"\nwritten: {run_dir / 'report.json'}, {run_dir / 'report.md'}"
          + (f", {run_dir / 'report.png'}" if png else " (no PNG: matplotlib is not installed)"))
    journal = summary.get("journal", {})
    if journal and not journal.get("error") and journal["approved_journaled"] < journal["approved_seen"]:
        return 1   # an approval left the switch without its journal record: that is a bug, not a number
    return 0
