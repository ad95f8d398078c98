"""The one typed configuration of a switch, loaded once from TOML and validated.

Every error names the file, the key and the problem, so a configuration that
does not validate is refused with a message an operator can act on at 3 a.m.
Relative paths inside the file are relative to the file.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from pathlib import Path
from typing import Literal

import msgspec

from routing import InvalidMsisdn, normalise_msisdn
from switch.errors import ConfigError
from switch.resources import data_dir

DEFAULT_ACQUIRER_PORT = 5800
DEFAULT_MAX_FRAME = 8192
DEFAULT_READ_TIMEOUT = 30.0          # seconds for a started frame to complete
DEFAULT_CONNECTION_IN_FLIGHT = 512   # requests in flight on one acquirer connection before reading pauses
DEFAULT_SWITCH_IN_FLIGHT = 20_000    # requests in flight in the whole process before 91
DEFAULT_MAX_QUEUE_DELAY = 0.05       # seconds a request may have queued before admission, or commits queue, before 91
DEFAULT_OPERATOR_TIMEOUT = 10.0      # seconds to wait for an operator's answer
DEFAULT_OPERATOR_IN_FLIGHT = 2_000   # per link
DEFAULT_ECHO_INTERVAL = 30.0         # seconds of idle before an echo
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_BACKOFF_MAX = 30.0
DEFAULT_DEDUPE_WINDOW = 500_000      # recent keys kept in memory
DEFAULT_ADMIN_PORT = 8580            # with `serve --workers N`, worker i binds this port + i
TOKEN_HASH = re.compile(r"sha256:[0-9a-f]{64}")


class Struct(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    pass


class ListenerConfig(Struct):
    host: str = "127.0.0.1"
    port: int = DEFAULT_ACQUIRER_PORT
    max_frame: int = DEFAULT_MAX_FRAME
    read_timeout: float = DEFAULT_READ_TIMEOUT
    max_in_flight_per_connection: int = DEFAULT_CONNECTION_IN_FLIGHT


class FrequencyLimit(Struct):
    count: int          # at most this many top-ups to one MSISDN ...
    period: float       # ... in this many seconds (65 beyond)


class AcquirerConfig(Struct):
    institution_id: str
    name: str
    allowed_addresses: list[str] = []   # host-to-host (bank87) peers; POS terminals are listed under [[terminals]]
    country: str = "IR"
    sign_on_required: bool = False
    # Rules (INTERFACES.md 1.6): empty / unset means no rule.
    allowed_operators: list[str] = []   # 57 for any other
    min_amount: int | None = None       # per top-up, 61 outside
    max_amount: int | None = None
    daily_limit: int | None = None      # sum of approved and in-flight top-ups per business day, 61 beyond
    frequency_limit: FrequencyLimit | None = None
    # Prepaid float (INTERFACES.md 51, 54): top-ups are paid from this ledger account.
    prepaid: bool = False
    account: str | None = None          # default: the institution id


class TerminalConfig(Struct):
    """A POS terminal (pos87): its acquirer, its merchant or agent, and its MAC key K1||K2 (32 hex)."""
    terminal_id: str
    merchant_id: str
    acquirer: str
    key: str
    account: str | None = None          # an agent's own float account, instead of the acquirer's


class PosListenerConfig(Struct):
    host: str = "127.0.0.1"
    port: int = 5820
    max_frame: int = DEFAULT_MAX_FRAME
    idle_timeout: float = 120.0         # a terminal connection with no request for this long is closed
    read_timeout: float = DEFAULT_READ_TIMEOUT


class PricingConfig(Struct):
    """What a prepaid payer's float is charged per operator: amount + fee - commission (see switch.accounts)."""
    fee_fixed: int = 0
    fee_percent_bp: int = 0
    commission_bp: int = 0


class LinkConfig(Struct):
    """`connect`: the switch dials host:port. `accept`: the switch listens on host:port and the
    operator's host dials in from one of `allowed_addresses`."""
    port: int
    mode: Literal["connect", "accept"] = "connect"
    host: str = "127.0.0.1"
    allowed_addresses: tuple[str, ...] = ()


class OperatorConfig(Struct):
    id: str
    name: str
    dialect: Literal["opa87", "opb93", "opcjson"]
    links: list[LinkConfig]
    secret: str | None = None        # opcjson: the login secret of `accept` links
    timeout: float = DEFAULT_OPERATOR_TIMEOUT
    max_in_flight: int = DEFAULT_OPERATOR_IN_FLIGHT
    echo_interval: float = DEFAULT_ECHO_INTERVAL
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    backoff_max: float = DEFAULT_BACKOFF_MAX


class BusinessDayConfig(Struct):
    cutover: str = "00:00"
    timezone: str = "UTC"


class JournalConfig(Struct):
    backend: Literal["postgres", "sqlite"] = "postgres"
    dsn: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    schema: str = "public"
    path: str = "airswitch-journal.sqlite"
    batch_max: int = 500
    # Postgres only: where journal records go while Postgres is unreachable (relative to this file);
    # unset, the switch answers 96 as soon as the journal cannot commit.
    spill_dir: str | None = None
    spill_max_seconds: float = 300.0


class ReversalConfig(Struct):
    """Store-and-forward of the reversals the switch owes operators, and crash recovery."""
    max_attempts: int = 12            # then "needs manual reconciliation"
    backoff_start: float = 1.0        # seconds before the first repeat; doubles, capped
    backoff_max: float = 60.0
    poll_interval: float = 1.0        # seconds between looks at the queue when nothing wakes it
    orphan_age: float = 60.0          # a request routed this long ago with no outcome was lost in a crash
    window_days: int = 0              # an acquirer's 0400 is accepted up to this many business days back


class DedupeConfig(Struct):
    backend: Literal["memory", "redis"] = "memory"
    window: int = DEFAULT_DEDUPE_WINDOW
    redis_url: str = "redis://127.0.0.1:6379/0"


class RoutingConfig(Struct):
    routes: str = "routes.toml"
    ported: str | None = None
    carrier_fallback: bool = True


class AdminUser(Struct):
    """One person or system allowed on the admin server: its bearer token is stored only hashed
    (`airswitch admin token` makes a token and its hash)."""
    name: str
    role: Literal["viewer", "operator"]   # viewer: read; operator: also resolve reversals and reload
    token_hash: str                       # "sha256:" + 64 lowercase hex digits of the token's SHA-256


class AdminConfig(Struct):
    """The admin HTTP server (health, metrics, the JSON API). Absent or enabled = false: off."""
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = DEFAULT_ADMIN_PORT
    country: str = "IR"                   # national MSISDNs typed into a search are of this country
    users: list[AdminUser] = []


class SwitchConfig(Struct):
    institution_id: str
    terminal_id: str = "AIRSW001"
    max_in_flight: int = DEFAULT_SWITCH_IN_FLIGHT
    # Overload (INTERFACES.md 1.5): a top-up that waited longer than this to be admitted, or that arrives
    # while journal commits take longer than this, is answered 91 at once instead of joining the queue.
    max_queue_delay: float = DEFAULT_MAX_QUEUE_DELAY
    listener: ListenerConfig = ListenerConfig()
    business_day: BusinessDayConfig = BusinessDayConfig()
    journal: JournalConfig = JournalConfig()
    dedupe: DedupeConfig = DedupeConfig()
    reversals: ReversalConfig = ReversalConfig()
    pos_listener: PosListenerConfig | None = None
    terminals: list[TerminalConfig] = []
    pricing: dict[str, PricingConfig] = {}
    routing: RoutingConfig = RoutingConfig()
    acquirers: list[AcquirerConfig] = []
    operators: list[OperatorConfig] = []
    admin: AdminConfig | None = None
    # Not in the file: where it came from, to resolve relative paths.
    source: str = ""

    def path(self, relative: str) -> Path:
        """A path from the file, resolved against the file's directory."""
        candidate = Path(relative)
        return candidate if candidate.is_absolute() else Path(self.source).parent / candidate


def load_config(path: str | Path) -> SwitchConfig:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(raw, path)


def parse_config(raw: dict, path: Path) -> SwitchConfig:
    raw = {**raw, "source": str(path)}
    try:
        config = msgspec.convert(raw, SwitchConfig)
    except msgspec.ValidationError as exc:
        message, _, where = str(exc).partition(" - at `$")
        key = where.rstrip("`").lstrip(".") or "(top level)"
        raise ConfigError(f"{path}: {key}: {message}") from None
    _check(config, path)
    return config


_DIGITS = re.compile(r"\d{1,11}")


class _Failure:
    """Raises the ConfigError that names the file, the key and the problem."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, key: str, problem: str) -> None:
        raise ConfigError(f"{self.path}: {key}: {problem}")


def _check(config: SwitchConfig, path: Path) -> None:
    """Rules a schema cannot say."""
    fail = _Failure(path)
    _check_switch(config, fail)
    _check_payers(config, fail)
    operator_ids = _check_operators(config, fail)
    _check_references(config, operator_ids, fail)
    _check_admin(config, fail)
    if not config.path(config.routing.routes).is_file():
        fail("routing.routes", f"no such file {config.path(config.routing.routes)}")


def _check_switch(config: SwitchConfig, fail: _Failure) -> None:
    if not _DIGITS.fullmatch(config.institution_id):
        fail("institution_id", "must be 1 to 11 digits (it travels in field 32)")
    if len(config.terminal_id) != 8:
        fail("terminal_id", "must be exactly 8 characters (field 41)")
    if not 0 < config.max_queue_delay <= 60:
        fail("max_queue_delay", "must be more than 0 and at most 60 seconds")
    if config.listener.max_in_flight_per_connection < 1:
        fail("listener.max_in_flight_per_connection", "must be at least 1")
    if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", config.business_day.cutover):
        fail("business_day.cutover", "must be HH:MM")
    try:
        import zoneinfo
        zoneinfo.ZoneInfo(config.business_day.timezone)
    except Exception:
        fail("business_day.timezone", f"unknown time zone {config.business_day.timezone!r}")


def _check_payers(config: SwitchConfig, fail: _Failure) -> None:
    """Acquirers and POS terminals."""
    seen: set[str] = set()
    for i, acquirer in enumerate(config.acquirers):
        key = f"acquirers[{i}]"
        if not _DIGITS.fullmatch(acquirer.institution_id):
            fail(f"{key}.institution_id", "must be 1 to 11 digits")
        if acquirer.institution_id in seen:
            fail(f"{key}.institution_id", f"{acquirer.institution_id} is configured twice")
        seen.add(acquirer.institution_id)
        for address in acquirer.allowed_addresses:
            try:
                ipaddress.ip_network(address, strict=False)
            except ValueError:
                fail(f"{key}.allowed_addresses", f"{address!r} is not an IP address or network")
    acquirer_ids = {a.institution_id for a in config.acquirers}
    if any(a.prepaid for a in config.acquirers) and config.journal.backend != "postgres":
        fail("acquirers", "prepaid float accounts need the Postgres journal")
    for i, terminal in enumerate(config.terminals):
        key = f"terminals[{i}]"
        if len(terminal.terminal_id) != 8:
            fail(f"{key}.terminal_id", "must be exactly 8 characters (field 41)")
        if terminal.acquirer not in acquirer_ids:
            fail(f"{key}.acquirer", f"{terminal.acquirer} is not a configured acquirer")
        if not re.fullmatch(r"[0-9A-Fa-f]{32}", terminal.key):
            fail(f"{key}.key", "must be 32 hex digits (K1||K2)")
    if config.terminals and config.pos_listener is None:
        fail("pos_listener", "terminals are configured but no [pos_listener]")


def _check_operators(config: SwitchConfig, fail: _Failure) -> set[str]:
    """Operators and their links; returns their ids."""
    operator_ids: set[str] = set()
    codecs = data_dir("codecs")
    for i, operator in enumerate(config.operators):
        key = f"operators[{i}]"
        if operator.id in operator_ids:
            fail(f"{key}.id", f"{operator.id} is configured twice")
        operator_ids.add(operator.id)
        if not (codecs / f"{operator.dialect}.json").is_file():
            fail(f"{key}.dialect", f"no dialect definition {operator.dialect}.json in {codecs}")
        if not operator.links:
            fail(f"{key}.links", "an operator needs at least one link")
        if operator.timeout <= 0:
            fail(f"{key}.timeout", "must be positive")
        for j, link in enumerate(operator.links):
            if link.mode == "accept":
                if not link.allowed_addresses:
                    fail(f"{key}.links[{j}].allowed_addresses", "an accept link needs the operator's addresses")
                for address in link.allowed_addresses:
                    try:
                        ipaddress.ip_network(address, strict=False)
                    except ValueError:
                        fail(f"{key}.links[{j}].allowed_addresses", f"{address!r} is not an IP address or network")
                if operator.dialect == "opcjson" and not operator.secret:
                    fail(f"{key}.secret", "an opcjson operator with accept links needs its login secret")
    return operator_ids


def _check_references(config: SwitchConfig, operator_ids: set[str], fail: _Failure) -> None:
    """Every operator named elsewhere is configured; reversal settings that depend on the operators."""
    for i, acquirer in enumerate(config.acquirers):
        for operator in acquirer.allowed_operators:
            if operator not in operator_ids:
                fail(f"acquirers[{i}].allowed_operators", f"{operator} is not a configured operator")
    for operator in config.pricing:
        if operator not in operator_ids:
            fail(f"pricing.{operator}", f"{operator} is not a configured operator")
    if config.reversals.max_attempts < 1:
        fail("reversals.max_attempts", "must be at least 1")
    if config.reversals.orphan_age <= max((op.timeout for op in config.operators), default=0):
        fail("reversals.orphan_age", "must be longer than every operator's timeout")


def _check_admin(config: SwitchConfig, fail: _Failure) -> None:
    admin = config.admin
    if admin is None:
        return
    if not 0 <= admin.port <= 65535:
        fail("admin.port", "must be 0 to 65535")
    try:
        normalise_msisdn("9121234567", admin.country)
    except InvalidMsisdn:
        pass
    except ValueError:
        fail("admin.country", f"unknown region {admin.country!r} (ISO 3166 alpha-2, e.g. IR)")
    names: set[str] = set()
    for i, user in enumerate(admin.users):
        if not TOKEN_HASH.fullmatch(user.token_hash):
            fail(f"admin.users[{i}].token_hash",
                 "must be sha256: and 64 lowercase hex digits (make one with `airswitch admin token`)")
        if user.name in names:
            fail(f"admin.users[{i}].name", f"{user.name} is configured twice")
        names.add(user.name)
    if len({user.token_hash for user in admin.users}) != len(admin.users):
        fail("admin.users", "two users have the same token")
