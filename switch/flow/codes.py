"""Response codes the switch answers with (INTERFACES.md 1.6), in one place.

A `ResponseCode` is a `str` (an `enum.StrEnum`): it goes on the wire as its value, and a
code read back from the journal compares equal to its member.
"""

from __future__ import annotations

from enum import StrEnum


class ResponseCode(StrEnum):
    APPROVED = "00"
    DECLINED = "05"                # declined by the operator
    INVALID_TXN = "12"             # unsupported MTI or processing code, reversal not allowed
    INVALID_AMOUNT = "13"          # not an amount that operator takes, or wrong currency
    INVALID_MSISDN = "14"          # malformed MSISDN, or unknown subscriber at the operator
    NOT_FOUND = "25"               # original not found
    FORMAT_ERROR = "30"            # a mandatory field missing or malformed
    INSUFFICIENT_FLOAT = "51"
    NOT_PERMITTED = "57"           # acquirer not allowed for that operator, or subscriber barred
    OVER_LIMIT = "61"              # exceeds the acquirer's amount limit
    SECURITY_VIOLATION = "63"      # MAC wrong or missing
    TOO_FREQUENT = "65"            # top-ups to one MSISDN in a period
    UNAVAILABLE = "91"             # operator unavailable or did not answer in time; switch overloaded
    NO_ROUTE = "92"
    DUPLICATE = "94"
    RECONCILIATION_ERROR = "95"    # 0510: totals differ (INTERFACES.md 3.2)
    MALFUNCTION = "96"
