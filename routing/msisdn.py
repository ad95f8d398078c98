"""MSISDN normalisation: every subscriber number entering the switch leaves here as
international digits (country code + national significant number, no '+'), e.g.
'989121234567', or is rejected with `InvalidMsisdn`.

This module owns the accepted input forms and the validity decision. The decision itself
is always phonenumbers' `is_valid_number` (its metadata knows which ranges are assigned);
what this module adds is a fast front end: it works out the country code and national
number from cached region metadata with plain string operations, because
`phonenumbers.parse` costs ~40 µs per call and the switch normalises every request.
`phonenumbers.parse` is still used for the regions whose national-prefix rules are
regular expressions (e.g. GB, AR, BR) and to explain rejections.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import phonenumbers
from phonenumbers import (
    COUNTRY_CODE_TO_REGION_CODE,
    NumberParseException,
    PhoneMetadata,
    PhoneNumber,
    ValidationResult,
)

__all__ = ["InvalidMsisdn", "normalise_msisdn", "to_phone_number"]


class InvalidMsisdn(ValueError):
    """The input is not a usable MSISDN; the message says what is wrong with it.

    The message deliberately does not repeat the number: it ends up in logs, and the
    caller already has the number if it needs to show it.
    """


# E.164 caps international numbers at 15 digits; '00' + 15 digits is 17 characters.
_MAX_INTERNATIONAL_DIGITS = 15
_MAX_RAW_LENGTH = 17

# Validity of a (country code, national number) pair is a pure function of the
# phonenumbers metadata, and subscribers top up the same numbers again and again,
# so remembering recent answers saves the ~11 µs `is_valid_number` costs.
_VALIDITY_CACHE_SIZE = 1 << 16

# Country calling codes keyed by their digits, so splitting a number needs no int().
_COUNTRY_CODES = {str(code): code for code in COUNTRY_CODE_TO_REGION_CODE}


@dataclass(frozen=True, slots=True)
class _RegionPlan:
    """What normalisation needs to know about a default region, derived once."""

    region: str
    country_code: int
    country_digits: str
    # True when phonenumbers strips the national (trunk) prefix literally, so the fast
    # path can do the same; False when it uses a regex rule and we defer to parse().
    literal_trunk: bool
    trunk_prefix: str | None


@functools.cache
def _region_plan(region: str) -> _RegionPlan:
    metadata = PhoneMetadata.metadata_for_region(region.upper())
    if metadata is None:
        # A configuration error, not a bad number: deliberately not InvalidMsisdn, so a
        # caller mapping InvalidMsisdn to "invalid number" does not hide it.
        raise ValueError(f"unknown default region {region!r} (expected ISO 3166 alpha-2, e.g. 'IR')")
    trunk = metadata.national_prefix
    literal = (
        metadata.national_prefix_transform_rule is None
        and metadata.national_prefix_for_parsing in (None, trunk)
        and (trunk is None or trunk.isdigit())
    )
    return _RegionPlan(
        region=region.upper(),
        country_code=metadata.country_code,
        country_digits=str(metadata.country_code),
        literal_trunk=literal,
        trunk_prefix=trunk or None,
    )


def _phone_number(country_code: int, national: str) -> PhoneNumber:
    """Build the PhoneNumber phonenumbers.parse would, without parsing."""
    number = PhoneNumber(country_code=country_code, national_number=int(national))
    # Some plans (Italy, ...) keep leading zeros in the national number; phonenumbers
    # records them separately because national_number is an int. Same rule as parse().
    if len(national) > 1 and national[0] == "0":
        number.italian_leading_zero = True
        zeros = 1
        while zeros < len(national) - 1 and national[zeros] == "0":
            zeros += 1
        if zeros != 1:
            number.number_of_leading_zeros = zeros
    return number


@functools.lru_cache(maxsize=_VALIDITY_CACHE_SIZE)
def _is_valid(country_code: int, national: str) -> bool:
    return phonenumbers.is_valid_number(_phone_number(country_code, national))


def _split_country_code(digits: str) -> tuple[int, str] | None:
    """Split international digits into (country code, national number).

    Country calling codes are a prefix-free code of 1-3 digits, so the first known
    code found is the only possible one.
    """
    for length in (1, 2, 3):
        if len(digits) <= length:
            return None
        country_code = _COUNTRY_CODES.get(digits[:length])
        if country_code is not None:
            return country_code, digits[length:]
    return None


def to_phone_number(msisdn: str) -> PhoneNumber | None:
    """The PhoneNumber for already-normalised international digits (None if the
    country code is unknown). Used by the router's carrier fallback."""
    split = _split_country_code(msisdn)
    return None if split is None else _phone_number(*split)


def _national_candidates(digits: str, plan: _RegionPlan) -> list[tuple[int, str]]:
    """Readings of digits written without '+'/'00', most specific first.

    A bare number is either national with the trunk prefix (09121234567), international
    digits of the default region (989121234567), or national without the trunk prefix
    (9121234567). Trying them in that order and keeping the first that phonenumbers
    calls valid mirrors what phonenumbers.parse does, without its cost.
    """
    if not plan.literal_trunk:
        try:
            number = phonenumbers.parse(digits, plan.region)
        except NumberParseException:
            return []
        return [(number.country_code, phonenumbers.national_significant_number(number))]
    candidates = []
    trunk = plan.trunk_prefix
    if trunk is not None and digits.startswith(trunk) and len(digits) > len(trunk):
        candidates.append((plan.country_code, digits[len(trunk):]))
    country = plan.country_digits
    if digits.startswith(country) and len(digits) > len(country):
        candidates.append((plan.country_code, digits[len(country):]))
    candidates.append((plan.country_code, digits))
    return candidates


def _syntax_error(raw: str, digits: str) -> str | None:
    """Why the characters themselves are unacceptable, or None if they are fine."""
    if not raw:
        return "MSISDN is empty"
    if len(raw) > _MAX_RAW_LENGTH:
        return f"MSISDN is too long ({len(raw)} characters)"
    if not digits:
        return "MSISDN has no digits after the international prefix"
    if digits.isascii() and digits.isdigit():
        return None
    if "+" in digits:
        return "MSISDN may contain '+' only as its first character"
    if any(ch.isspace() for ch in digits):
        return "MSISDN contains whitespace"
    return "MSISDN contains characters other than the digits 0-9"


_REASONS = {
    ValidationResult.TOO_SHORT: "MSISDN is too short",
    ValidationResult.TOO_LONG: "MSISDN is too long",
    ValidationResult.INVALID_LENGTH: "MSISDN has the wrong number of digits for its country",
    ValidationResult.INVALID_COUNTRY_CODE: "MSISDN has an unknown country code",
    ValidationResult.IS_POSSIBLE_LOCAL_ONLY: "MSISDN is only a local number (area code missing)",
}


def _explain_rejection(digits: str, international: bool, plan: _RegionPlan) -> str:
    """Phonenumbers' own reading of a rejected number, as a human reason.

    Only runs on the failure path, so the cost of parse() does not matter here.
    """
    if international and len(digits) > _MAX_INTERNATIONAL_DIGITS:
        return f"MSISDN is too long ({len(digits)} digits; E.164 allows {_MAX_INTERNATIONAL_DIGITS})"
    try:
        number = phonenumbers.parse(("+" if international else "") + digits, plan.region)
    except NumberParseException as exc:
        return f"MSISDN cannot be read as a phone number ({exc._msg})"
    reason = phonenumbers.is_possible_number_with_reason(number)
    if reason in _REASONS:
        return _REASONS[reason]
    region = phonenumbers.region_code_for_number(number) or plan.region
    return f"MSISDN is not a valid number in region {region} (unknown range, or wrong length for its range)"


def normalise_msisdn(raw: str, default_region: str) -> str:
    """Return the number as international digits, e.g. '989121234567'.

    Accepted forms: international digits (989121234567), the same after '+' or '00'
    (+989121234567, 00989121234567), and national numbers with or without the trunk
    prefix (09121234567, 9121234567), which are read in `default_region` (ISO 3166
    alpha-2, e.g. 'IR'). Anything else, or a number phonenumbers does not consider
    valid, raises InvalidMsisdn. An unknown default_region raises plain ValueError.
    """
    plan = _region_plan(default_region)
    if raw[:1] == "+":
        digits, international = raw[1:], True
    elif raw[:2] == "00":
        # '00' is the international prefix in most of the world (and in Iran); accept it
        # regardless of the default region's own dialling prefix.
        digits, international = raw[2:], True
    else:
        digits, international = raw, False

    problem = _syntax_error(raw, digits)
    if problem is not None:
        raise InvalidMsisdn(problem)

    if international:
        if len(digits) <= _MAX_INTERNATIONAL_DIGITS:
            split = _split_country_code(digits)
            if split is not None and _is_valid(*split):
                return digits
    else:
        for country_code, national in _national_candidates(digits, plan):
            if _is_valid(country_code, national):
                return f"{country_code}{national}"

    raise InvalidMsisdn(_explain_rejection(digits, international, plan))
