"""The routing table: which operator serves an MSISDN, and which top-up amounts that
operator accepts.

This module owns the routing decision (ported-number override, then longest matching
number-range prefix, then optionally the carrier phonenumbers' metadata names), the
per-operator amount rules, and the loading and validation of the files they come from:
a TOML routes file (operators, prefixes, amounts, carrier names) and a CSV of ported
numbers. It is pure: no I/O other than reading those files, no asyncio.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from phonenumbers import carrier

from routing.msisdn import to_phone_number

__all__ = ["AmountRule", "RouteMatch", "Router", "RoutingConfigError"]


class RoutingConfigError(ValueError):
    """A routes or ported-numbers file is unusable; the message names the file and the
    key or line at fault, and what is wrong."""


@dataclass(frozen=True, slots=True)
class AmountRule:
    """The top-up amounts (minor units of `currency`) an operator accepts: either an
    explicit list, or a range from `minimum` to `maximum` in multiples of `step`
    counted from `minimum` (no step: any amount in the range)."""

    currency: str  # ISO 4217 numeric, e.g. "364" for the Iranian rial
    amounts: frozenset[int] | None = None
    minimum: int | None = None
    maximum: int | None = None
    step: int | None = None

    def __post_init__(self) -> None:
        if not (len(self.currency) == 3 and self.currency.isascii() and self.currency.isdigit()):
            raise ValueError(f"currency must be a 3-digit ISO 4217 numeric code, got {self.currency!r}")
        if self.amounts is not None:
            if not isinstance(self.amounts, frozenset):
                object.__setattr__(self, "amounts", frozenset(self.amounts))
            if self.minimum is not None or self.maximum is not None or self.step is not None:
                raise ValueError("give either amounts or minimum/maximum/step, not both")
            if not self.amounts or not all(_is_positive_int(a) for a in self.amounts):
                raise ValueError("amounts must be a non-empty set of positive integers")
            return
        if self.minimum is None or self.maximum is None:
            raise ValueError("give either amounts or both minimum and maximum")
        for field, value in (("minimum", self.minimum), ("maximum", self.maximum), ("step", self.step)):
            if value is not None and not _is_positive_int(value):
                raise ValueError(f"{field} must be a positive integer, got {value!r}")
        if self.minimum > self.maximum:
            raise ValueError(f"minimum {self.minimum} is greater than maximum {self.maximum}")

    def accepts(self, amount: int, currency: str) -> bool:
        if currency != self.currency or amount <= 0:
            return False
        if self.amounts is not None:
            return amount in self.amounts
        minimum, maximum, step = self.minimum, self.maximum, self.step
        assert minimum is not None and maximum is not None  # guaranteed by __post_init__
        if not minimum <= amount <= maximum:
            return False
        return step is None or (amount - minimum) % step == 0


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """Where an MSISDN goes, and why (for the journal and for support)."""

    operator: str  # operator id, e.g. "MCI"
    source: str  # "ported" | "prefix" | "carrier"
    detail: str  # the matched prefix, the ported msisdn, or the carrier name


class Router:
    """Routes normalised MSISDNs (international digits) to operator ids.

    Lookups are plain dict hits: the ported numbers by full MSISDN, then the prefix
    table once per distinct prefix length, longest first, so the cost depends on how
    many prefix lengths exist, not on how many prefixes.
    """

    __slots__ = ("_ported", "_prefix_routes", "_prefix_lengths", "_carrier_names", "_amount_rules", "_operators")

    def __init__(
        self,
        prefixes: Mapping[str, str],
        ported: Mapping[str, str],
        amount_rules: Mapping[str, AmountRule],
        carrier_names: Mapping[str, str] | None = None,
    ) -> None:
        """prefixes: international-digit prefix -> operator id; ported: full international
        MSISDN -> operator id; carrier_names: phonenumbers' English carrier name ->
        operator id, or None to disable the carrier fallback."""
        for prefix in prefixes:
            # An empty prefix would silently become a catch-all route.
            if not (prefix.isascii() and prefix.isdigit()):
                raise ValueError(f"prefix must be a non-empty string of digits, got {prefix!r}")
        # Prebuilt matches: the hot path returns a shared immutable object, no allocation.
        self._prefix_routes = {p: RouteMatch(op, "prefix", p) for p, op in prefixes.items()}
        self._prefix_lengths = tuple(sorted({len(p) for p in prefixes}, reverse=True))
        self._ported = dict(ported)
        self._amount_rules = dict(amount_rules)
        self._carrier_names = dict(carrier_names) if carrier_names is not None else None
        self._operators = frozenset(
            [*prefixes.values(), *set(self._ported.values()), *amount_rules, *(carrier_names or {}).values()]
        )

    @classmethod
    def from_files(cls, routes_path: Path, ported_path: Path | None, carrier_fallback: bool = True) -> Router:
        """Load a routes TOML file and, optionally, a ported-numbers CSV.

        Raises RoutingConfigError naming the file and the key or line at fault.
        """
        routes = _load_routes(Path(routes_path))
        ported = _load_ported(Path(ported_path), routes.operators) if ported_path is not None else {}
        return cls(
            prefixes=routes.prefixes,
            ported=ported,
            amount_rules=routes.amount_rules,
            carrier_names=routes.carrier_names if carrier_fallback else None,
        )

    @property
    def operators(self) -> frozenset[str]:
        """Every operator id the router knows (from a routes file: every operator in it)."""
        return self._operators

    def route(self, msisdn: str) -> RouteMatch | None:
        """The operator for an already-normalised MSISDN, or None if nothing matches."""
        operator = self._ported.get(msisdn)
        if operator is not None:
            # Number portability: the subscriber kept the number but changed operator,
            # so the range it belongs to is no longer the truth.
            return RouteMatch(operator, "ported", msisdn)
        prefix_routes = self._prefix_routes
        for length in self._prefix_lengths:
            # When msisdn is shorter than `length` the slice is msisdn itself, which is
            # still a prefix of msisdn, so a hit is always a genuine match.
            match = prefix_routes.get(msisdn[:length])
            if match is not None:
                return match
        if self._carrier_names is not None:
            return _route_by_carrier(msisdn, self._carrier_names)
        return None

    def amount_rule(self, operator: str) -> AmountRule | None:
        return self._amount_rules.get(operator)

    def check_amount(self, operator: str, amount: int, currency: str) -> bool:
        """True if `operator` accepts a top-up of `amount` minor units of `currency`."""
        rule = self._amount_rules.get(operator)
        return rule is not None and rule.accepts(amount, currency)


def _route_by_carrier(msisdn: str, carrier_names: Mapping[str, str]) -> RouteMatch | None:
    # Last resort for ranges missing from the table (e.g. new allocations): phonenumbers'
    # carrier metadata names the operator the range was originally assigned to.
    number = to_phone_number(msisdn)
    if number is None:
        return None
    name = carrier.name_for_number(number, "en")
    operator = carrier_names.get(name) if name else None
    return RouteMatch(operator, "carrier", name) if operator is not None else None


# --------------------------------------------------------------------------------------
# Loading


_OPERATOR_ID = re.compile(r"[A-Za-z0-9_-]+")
_OPERATOR_KEYS = frozenset({"name", "currency", "amounts", "minimum", "maximum", "step", "prefixes", "carrier_names"})
_PORTED_HEADER = "msisdn,operator"


@dataclass(frozen=True, slots=True)
class _RoutesFile:
    operators: dict[str, str]  # operator id -> display name (the id when none is given)
    prefixes: dict[str, str]
    amount_rules: dict[str, AmountRule]
    carrier_names: dict[str, str]


class _BadKey(Exception):
    """Raised by the routes-file checks; _load_routes adds the file name."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")


def _is_positive_int(value: object) -> bool:
    # bool is an int subclass; `amounts = [true]` is a typo, not an amount of 1.
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _is_digits(value: object) -> bool:
    return isinstance(value, str) and value.isascii() and value.isdigit()


def _load_routes(path: Path) -> _RoutesFile:
    try:
        with path.open("rb") as f:
            document = tomllib.load(f)
    except OSError as exc:
        raise RoutingConfigError(f"{path}: cannot read routes file: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise RoutingConfigError(f"{path}: invalid TOML: {exc}") from exc
    try:
        return _parse_routes(document)
    except _BadKey as exc:
        raise RoutingConfigError(f"{path}: {exc}") from None


def _parse_routes(document: dict[str, Any]) -> _RoutesFile:
    unknown = sorted(set(document) - {"operators"})
    if unknown:
        raise _BadKey(unknown[0], "unknown key (expected only [operators.<ID>] tables)")
    operators_table = document.get("operators")
    if not isinstance(operators_table, dict) or not operators_table:
        raise _BadKey("operators", "must contain at least one [operators.<ID>] table")

    routes = _RoutesFile(operators={}, prefixes={}, amount_rules={}, carrier_names={})
    for operator, table in operators_table.items():
        key = f"operators.{operator}"
        if not _OPERATOR_ID.fullmatch(operator):
            raise _BadKey(key, "operator id must be letters, digits, '_' or '-'")
        if not isinstance(table, dict):
            raise _BadKey(key, "must be a table")
        unknown = sorted(set(table) - _OPERATOR_KEYS)
        if unknown:
            raise _BadKey(f"{key}.{unknown[0]}", f"unknown key (expected: {', '.join(sorted(_OPERATOR_KEYS))})")

        name = table.get("name", operator)
        if not isinstance(name, str) or not name:
            raise _BadKey(f"{key}.name", "must be a non-empty string")
        routes.operators[operator] = name
        routes.amount_rules[operator] = _parse_amount_rule(table, key)

        prefixes = table.get("prefixes", [])
        if not isinstance(prefixes, list) or not all(_is_digits(p) for p in prefixes):
            raise _BadKey(f"{key}.prefixes", "must be a list of digit strings (international form, e.g. \"98912\")")
        for prefix in prefixes:
            owner = routes.prefixes.setdefault(prefix, operator)
            if owner != operator:
                raise _BadKey(f"{key}.prefixes", f"prefix {prefix!r} is already routed to {owner}")

        carrier_names = table.get("carrier_names", [])
        if not isinstance(carrier_names, list) or not all(isinstance(c, str) and c for c in carrier_names):
            raise _BadKey(f"{key}.carrier_names", "must be a list of non-empty strings")
        for carrier_name in carrier_names:
            owner = routes.carrier_names.setdefault(carrier_name, operator)
            if owner != operator:
                raise _BadKey(f"{key}.carrier_names", f"carrier name {carrier_name!r} is already mapped to {owner}")
    return routes


def _parse_amount_rule(table: dict[str, Any], key: str) -> AmountRule:
    currency = table.get("currency")
    if not (_is_digits(currency) and len(currency) == 3):
        raise _BadKey(f"{key}.currency", 'must be a 3-digit ISO 4217 numeric code in quotes, e.g. "364"')

    amounts = table.get("amounts")
    range_keys = [k for k in ("minimum", "maximum", "step") if k in table]
    if amounts is not None:
        if range_keys:
            raise _BadKey(f"{key}.{range_keys[0]}", "give either amounts or minimum/maximum/step, not both")
        if not isinstance(amounts, list) or not amounts or not all(_is_positive_int(a) for a in amounts):
            raise _BadKey(f"{key}.amounts", "must be a list of positive integers")
        return AmountRule(currency=currency, amounts=frozenset(amounts))

    for field in ("minimum", "maximum"):
        if field not in table:
            raise _BadKey(f"{key}.{field}", "missing (give either amounts or minimum and maximum)")
    for field in range_keys:
        if not _is_positive_int(table[field]):
            raise _BadKey(f"{key}.{field}", "must be a positive integer")
    if table["minimum"] > table["maximum"]:
        raise _BadKey(f"{key}.minimum", f"{table['minimum']} is greater than maximum {table['maximum']}")
    return AmountRule(currency=currency, minimum=table["minimum"], maximum=table["maximum"], step=table.get("step"))


def _load_ported(path: Path, operators: Mapping[str, str]) -> dict[str, str]:
    """Read `msisdn,operator` rows (international digits, operator id from the routes
    file). Blank lines and lines starting with '#' are ignored."""
    # Map each id to the routes file's own string object, so a million ported rows share
    # a handful of operator strings instead of holding a copy each.
    canonical = {operator: operator for operator in operators}
    ported: dict[str, str] = {}
    header_seen = False
    try:
        # utf-8-sig: spreadsheet exports often start with a byte-order mark.
        with path.open(encoding="utf-8-sig", newline="") as f:
            for line_number, line in enumerate(f, 1):
                text = line.strip()
                if not text or text.startswith("#"):
                    continue
                if not header_seen:
                    if text.replace(" ", "") != _PORTED_HEADER:
                        raise _line_error(path, line_number, f"expected the header {_PORTED_HEADER!r}")
                    header_seen = True
                    continue
                fields = text.split(",")
                if len(fields) != 2:
                    raise _line_error(path, line_number, f"expected 2 fields (msisdn,operator), got {len(fields)}")
                msisdn, operator = fields[0].strip(), fields[1].strip()
                if not (_is_digits(msisdn) and 7 <= len(msisdn) <= 15 and msisdn[0] != "0"):
                    raise _line_error(
                        path, line_number, "msisdn must be 7-15 international digits without '+' or '00', e.g. 989121234567"
                    )
                if operator not in canonical:
                    raise _line_error(path, line_number, f"unknown operator {operator!r} (not in the routes file)")
                if msisdn in ported:
                    raise _line_error(path, line_number, "msisdn is listed more than once")
                ported[msisdn] = canonical[operator]
    except OSError as exc:
        raise RoutingConfigError(f"{path}: cannot read ported-numbers file: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise RoutingConfigError(f"{path}: not UTF-8 text: {exc}") from exc
    if not header_seen:
        raise _line_error(path, 1, f"expected the header {_PORTED_HEADER!r}")
    return ported


def _line_error(path: Path, line_number: int, problem: str) -> RoutingConfigError:
    return RoutingConfigError(f"{path}: line {line_number}: {problem}")
