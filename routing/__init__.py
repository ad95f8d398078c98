"""Routing: turns what the acquirer sent into "which operator, and is this amount allowed".

The package owns MSISDN normalisation (routing.msisdn) and the routing table (routing.table):
ported-number overrides, longest-prefix number ranges, the phonenumbers carrier fallback,
per-operator amount rules, and loading/validating the routes TOML and ported-numbers CSV.
It is pure and synchronous: no asyncio, no I/O beyond reading those two files.
"""

from routing.msisdn import InvalidMsisdn, normalise_msisdn
from routing.table import AmountRule, RouteMatch, Router, RoutingConfigError

__all__ = [
    "AmountRule",
    "InvalidMsisdn",
    "RouteMatch",
    "Router",
    "RoutingConfigError",
    "normalise_msisdn",
]
