"""Tests for the routing package: MSISDN normalisation, the Router, amount rules, and
the routes/ported-numbers loaders (including the shipped demo data)."""

from __future__ import annotations

import random
import textwrap
import tomllib
from pathlib import Path

import phonenumbers
import pytest
from phonenumbers import PhoneNumberFormat, PhoneNumberType, carrier

from routing import (
    AmountRule,
    InvalidMsisdn,
    RouteMatch,
    Router,
    RoutingConfigError,
    normalise_msisdn,
)

DEMO = Path(__file__).parents[1] / "conf" / "demo"
RIAL = "364"


# --------------------------------------------------------------------------------------
# MSISDN normalisation


@pytest.mark.parametrize(
    "raw",
    ["989121234567", "+989121234567", "00989121234567", "09121234567", "9121234567"],
)
def test_every_accepted_form_normalises_to_the_same_international_digits(raw):
    assert normalise_msisdn(raw, "IR") == "989121234567"


def test_default_region_is_case_insensitive():
    assert normalise_msisdn("09121234567", "ir") == "989121234567"


def test_international_forms_of_other_countries_are_accepted_whatever_the_default_region():
    assert normalise_msisdn("+447911123456", "IR") == "447911123456"
    assert normalise_msisdn("00447911123456", "IR") == "447911123456"


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("07911123456", "GB", "447911123456"),  # GB: trunk prefix rule is a regex -> parse() path
        ("447911123456", "GB", "447911123456"),
        ("0612345678", "IT", "390612345678"),  # Italy keeps the leading zero
        ("+390612345678", "IR", "390612345678"),
        ("2025550123", "US", "12025550123"),
        ("12025550123", "US", "12025550123"),  # NANP: trunk '1' equals the country code
        ("89161234567", "RU", "79161234567"),  # RU: trunk '8', country code 7
        ("8001234567", "RU", "78001234567"),  # national number starting with the trunk digit
    ],
)
def test_national_forms_follow_the_default_regions_numbering_plan(raw, region, expected):
    assert normalise_msisdn(raw, region) == expected


def _example_numbers():
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        number = phonenumbers.example_number_for_type(region, PhoneNumberType.MOBILE)
        if number is not None:
            yield region, number


@pytest.mark.parametrize(("region", "number"), list(_example_numbers()), ids=lambda v: str(v)[:12])
def test_every_regions_example_mobile_normalises_from_international_and_national_forms(region, number):
    e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
    national = "".join(ch for ch in phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL) if ch.isdigit())
    assert normalise_msisdn(e164, region) == e164[1:]
    assert normalise_msisdn("00" + e164[1:], region) == e164[1:]
    assert normalise_msisdn(national, region) == e164[1:]


def test_fast_path_agrees_with_phonenumbers_parse_on_random_iranian_numbers():
    # Every accepted form of a random national significant number must be accepted exactly
    # when phonenumbers.parse() + is_valid_number() accept it, with the same digits.
    rng = random.Random(8583)
    for _ in range(2000):
        national = rng.choice("123456789") + "".join(rng.choice("0123456789") for _ in range(rng.randint(6, 10)))
        for raw in (f"0{national}", national, f"98{national}", f"+98{national}", f"0098{national}"):
            parsed = phonenumbers.parse(raw, "IR")
            expected = (
                phonenumbers.format_number(parsed, PhoneNumberFormat.E164)[1:] if phonenumbers.is_valid_number(parsed) else None
            )
            try:
                got = normalise_msisdn(raw, "IR")
            except InvalidMsisdn:
                got = None
            assert got == expected, raw


def test_a_trunk_zero_after_the_country_code_is_not_an_accepted_form():
    # phonenumbers.parse() would read '+98 0912...' as +98 912...; the switch's contract
    # lists the accepted forms, and this is not one of them.
    for raw in ("+9809121234567", "009809121234567", "9809121234567"):
        with pytest.raises(InvalidMsisdn):
            normalise_msisdn(raw, "IR")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty"),
        ("+", "no digits"),
        ("00", "no digits"),
        ("0912123456a", "other than the digits"),
        ("abc", "other than the digits"),
        ("۰۹۱۲۱۲۳۴۵۶۷", "other than the digits"),  # Persian digits: not ASCII
        ("0912 123 4567", "whitespace"),
        (" 09121234567", "whitespace"),
        ("09121234567\n", "whitespace"),
        ("+98912+1234567", "'+' only as its first character"),
        ("98912+1234567", "'+' only as its first character"),
        ("++989121234567", "'+' only as its first character"),
        ("091", "too short"),
        ("091212345", "wrong number of digits"),  # 8 national digits: no Iranian number has 8
        ("+98912", "too short"),
        ("091212345678", "too long"),
        ("+9891212345678901", "too long"),
        ("00989121234567891234", "too long"),
        ("+0989121234567", "cannot be read"),
        ("09951234567", "not a valid number in region IR"),  # 0995: unassigned mobile range
        ("+989951234567", "not a valid number in region IR"),
    ],
)
def test_unusable_numbers_raise_invalid_msisdn_saying_what_is_wrong(raw, reason):
    with pytest.raises(InvalidMsisdn) as excinfo:
        normalise_msisdn(raw, "IR")
    assert reason in str(excinfo.value)


def test_invalid_msisdn_is_a_value_error_and_does_not_repeat_the_number():
    with pytest.raises(ValueError) as excinfo:
        normalise_msisdn("09951234567", "IR")
    assert "9951234567" not in str(excinfo.value)


def test_unknown_default_region_is_a_configuration_error_not_an_invalid_msisdn():
    with pytest.raises(ValueError) as excinfo:
        normalise_msisdn("09121234567", "XX")
    assert not isinstance(excinfo.value, InvalidMsisdn)


# --------------------------------------------------------------------------------------
# Router


def _rules(*operators: str) -> dict[str, AmountRule]:
    return {op: AmountRule(currency=RIAL, minimum=1, maximum=10**9) for op in operators}


def test_longest_prefix_wins_over_a_shorter_one():
    router = Router({"9891": "MCI", "98912": "IRANCELL", "989": "RIGHTEL"}, {}, _rules("MCI", "IRANCELL", "RIGHTEL"))
    assert router.route("989121234567") == RouteMatch("IRANCELL", "prefix", "98912")
    assert router.route("989131234567") == RouteMatch("MCI", "prefix", "9891")
    assert router.route("989301234567") == RouteMatch("RIGHTEL", "prefix", "989")


def test_a_number_shorter_than_the_longest_prefix_still_matches_shorter_prefixes():
    router = Router({"98912345": "IRANCELL", "989": "MCI"}, {}, _rules("MCI", "IRANCELL"))
    assert router.route("9891234") == RouteMatch("MCI", "prefix", "989")


def test_ported_override_beats_the_prefix():
    router = Router({"98912": "MCI"}, {"989121234567": "IRANCELL"}, _rules("MCI", "IRANCELL"))
    assert router.route("989121234567") == RouteMatch("IRANCELL", "ported", "989121234567")
    assert router.route("989121234568") == RouteMatch("MCI", "prefix", "98912")


def test_carrier_fallback_is_used_only_when_no_prefix_matches():
    # phonenumbers names 0996 and 0912 "IR-MCI"; the table maps 98912 to a different operator
    # to show the prefix is preferred whenever it matches.
    router = Router({"98912": "OTHER"}, {}, _rules("MCI", "OTHER"), carrier_names={"IR-MCI": "MCI"})
    assert router.route("989121234567") == RouteMatch("OTHER", "prefix", "98912")
    assert router.route("989961234567") == RouteMatch("MCI", "carrier", "IR-MCI")


def test_carrier_fallback_is_not_used_when_disabled():
    router = Router({"98912": "MCI"}, {}, _rules("MCI"), carrier_names=None)
    assert router.route("989961234567") is None


def test_carrier_fallback_ignores_carrier_names_not_mapped_to_an_operator():
    router = Router({}, {}, _rules("MCI"), carrier_names={"IR-MCI": "MCI"})
    assert router.route("989311234567") is None  # phonenumbers says "MTCE": not ours
    assert router.route("989951234567") is None  # unassigned range: no carrier name at all
    assert router.route("999999") is None  # not even a known country code


def test_no_route_returns_none():
    router = Router({"98912": "MCI"}, {"989351234567": "MCI"}, _rules("MCI"))
    assert router.route("447911123456") is None


def test_an_empty_or_non_digit_prefix_is_refused_rather_than_becoming_a_catch_all():
    for prefix in ("", "98-91", "+98"):
        with pytest.raises(ValueError):
            Router({prefix: "MCI"}, {}, _rules("MCI"))


def test_operators_lists_every_operator_the_router_was_given():
    router = Router({"98912": "MCI"}, {"989351234567": "PORTED_ONLY"}, _rules("MCI", "RULE_ONLY"), {"X": "CARRIER_ONLY"})
    assert router.operators == frozenset({"MCI", "PORTED_ONLY", "RULE_ONLY", "CARRIER_ONLY"})


# --------------------------------------------------------------------------------------
# Amount rules


def test_a_list_rule_accepts_exactly_the_listed_amounts():
    rule = AmountRule(currency=RIAL, amounts=frozenset({10000, 50000}))
    assert rule.accepts(10000, RIAL)
    assert rule.accepts(50000, RIAL)
    assert not rule.accepts(20000, RIAL)


def test_a_range_rule_accepts_amounts_between_minimum_and_maximum_on_the_step():
    rule = AmountRule(currency=RIAL, minimum=20000, maximum=1000000, step=10000)
    assert rule.accepts(20000, RIAL)
    assert rule.accepts(30000, RIAL)
    assert rule.accepts(1000000, RIAL)
    assert not rule.accepts(10000, RIAL)  # below minimum
    assert not rule.accepts(1010000, RIAL)  # above maximum
    assert not rule.accepts(25000, RIAL)  # in range but off the step


def test_step_alignment_counts_from_the_minimum():
    rule = AmountRule(currency=RIAL, minimum=15000, maximum=100000, step=10000)
    assert rule.accepts(25000, RIAL)
    assert not rule.accepts(20000, RIAL)


def test_a_range_rule_without_step_accepts_any_amount_in_range():
    rule = AmountRule(currency=RIAL, minimum=1000, maximum=2000)
    assert rule.accepts(1234, RIAL)
    assert not rule.accepts(2001, RIAL)


@pytest.mark.parametrize(
    "rule",
    [AmountRule(currency=RIAL, amounts=frozenset({10000})), AmountRule(currency=RIAL, minimum=1, maximum=100000)],
)
def test_amount_rules_refuse_the_wrong_currency_and_zero_or_negative_amounts(rule):
    assert rule.accepts(10000, RIAL)
    assert not rule.accepts(10000, "840")
    assert not rule.accepts(0, RIAL)
    assert not rule.accepts(-10000, RIAL)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"currency": "IRR", "minimum": 1, "maximum": 2},  # alphabetic code, not numeric
        {"currency": RIAL},  # neither amounts nor range
        {"currency": RIAL, "minimum": 1},  # half a range
        {"currency": RIAL, "amounts": frozenset()},
        {"currency": RIAL, "amounts": frozenset({0})},
        {"currency": RIAL, "amounts": frozenset({10}), "minimum": 1, "maximum": 20},
        {"currency": RIAL, "minimum": 20, "maximum": 10},
        {"currency": RIAL, "minimum": 1, "maximum": 10, "step": 0},
    ],
)
def test_inconsistent_amount_rules_are_refused(kwargs):
    with pytest.raises(ValueError):
        AmountRule(**kwargs)


def test_check_amount_uses_the_operators_rule_and_refuses_unknown_operators():
    router = Router({}, {}, {"MCI": AmountRule(currency=RIAL, amounts=frozenset({10000}))})
    assert router.check_amount("MCI", 10000, RIAL)
    assert not router.check_amount("MCI", 20000, RIAL)
    assert not router.check_amount("NOBODY", 10000, RIAL)
    assert router.amount_rule("MCI") == AmountRule(currency=RIAL, amounts=frozenset({10000}))
    assert router.amount_rule("NOBODY") is None


# --------------------------------------------------------------------------------------
# Demo data

DEMO_RANGES = {
    "MCI": [*range(910, 920), *range(990, 995)],
    "IRANCELL": [930, 933, 935, 936, 937, 938, 939, 901, 902, 903, 904, 905],
    "RIGHTEL": [920, 921, 922],
}


@pytest.fixture(scope="module")
def demo_router() -> Router:
    return Router.from_files(DEMO / "routes.toml", DEMO / "ported.csv")


def test_demo_routes_name_exactly_the_three_operators(demo_router):
    assert demo_router.operators == frozenset({"MCI", "IRANCELL", "RIGHTEL"})


@pytest.mark.parametrize(
    ("operator", "national_range"),
    [(op, r) for op, ranges in DEMO_RANGES.items() for r in ranges],
)
def test_demo_routes_send_every_range_to_its_operator_by_prefix(demo_router, operator, national_range):
    msisdn = normalise_msisdn(f"0{national_range}7654321", "IR")
    assert demo_router.route(msisdn) == RouteMatch(operator, "prefix", f"98{national_range}")


@pytest.mark.parametrize("operator", sorted(DEMO_RANGES))
def test_demo_carrier_names_are_the_names_phonenumbers_reports_for_each_range(operator):
    # Guards the demo file against typos and against phonenumbers renaming a carrier.
    with (DEMO / "routes.toml").open("rb") as f:
        carrier_names = tomllib.load(f)["operators"][operator]["carrier_names"]
    for national_range in DEMO_RANGES[operator]:
        reported = carrier.name_for_number(phonenumbers.parse(f"+98{national_range}7654321"), "en")
        assert reported in carrier_names, (national_range, reported)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("09121234567", RouteMatch("IRANCELL", "ported", "989121234567")),
        ("+989351234567", RouteMatch("MCI", "ported", "989351234567")),
        ("09201234567", RouteMatch("IRANCELL", "ported", "989201234567")),
        ("09011234567", RouteMatch("RIGHTEL", "ported", "989011234567")),
        ("09961234567", RouteMatch("MCI", "carrier", "IR-MCI")),  # range not in the table
        ("09981234567", RouteMatch("RIGHTEL", "carrier", "Rightel")),
        ("09001234567", RouteMatch("IRANCELL", "carrier", "Irancell")),
        ("09311234567", None),  # MTCE (Espadan): not a demo operator
        ("09341234567", None),  # TeleKish
    ],
)
def test_demo_ported_numbers_and_carrier_fallback_route_as_documented(demo_router, raw, expected):
    assert demo_router.route(normalise_msisdn(raw, "IR")) == expected


def test_demo_without_ported_file_or_carrier_fallback_uses_prefixes_only():
    router = Router.from_files(DEMO / "routes.toml", None, carrier_fallback=False)
    assert router.route("989121234567") == RouteMatch("MCI", "prefix", "98912")
    assert router.route("989961234567") is None


@pytest.mark.parametrize(
    ("operator", "amount", "accepted"),
    [
        ("MCI", 50000, True),
        ("MCI", 30000, False),  # not in MCI's list
        ("IRANCELL", 10000, True),
        ("IRANCELL", 2000000, True),
        ("IRANCELL", 15000, False),  # off the 10,000 step
        ("IRANCELL", 2010000, False),
        ("RIGHTEL", 10000, False),  # below RighTel's 20,000 minimum
        ("RIGHTEL", 1000000, True),
    ],
)
def test_demo_amount_rules(demo_router, operator, amount, accepted):
    assert demo_router.check_amount(operator, amount, RIAL) is accepted
    assert not demo_router.check_amount(operator, amount, "840")


# --------------------------------------------------------------------------------------
# Configuration errors

VALID_OPERATOR = """
[operators.MCI]
currency = "364"
amounts = [10000]
prefixes = ["98912"]
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_routes_error_names_file_key_and_problem(tmp_path):
    routes = _write(tmp_path, "routes.toml", '[operators.MCI]\ncurrency = "364"\namounts = [10000, "20000"]\n')
    with pytest.raises(RoutingConfigError) as excinfo:
        Router.from_files(routes, None)
    assert str(excinfo.value) == f"{routes}: operators.MCI.amounts: must be a list of positive integers"


@pytest.mark.parametrize(
    ("toml", "key", "problem"),
    [
        ("", "operators", "at least one"),
        ("[routes]\n", "routes", "unknown key"),
        ('[operators.MCI]\namounts = [1]\n', "operators.MCI.currency", "3-digit"),
        ('[operators.MCI]\ncurrency = 364\namounts = [1]\n', "operators.MCI.currency", "3-digit"),
        ('[operators.MCI]\ncurrency = "364"\n', "operators.MCI.minimum", "missing"),
        ('[operators.MCI]\ncurrency = "364"\namounts = []\n', "operators.MCI.amounts", "positive integers"),
        ('[operators.MCI]\ncurrency = "364"\namounts = [0]\n', "operators.MCI.amounts", "positive integers"),
        ('[operators.MCI]\ncurrency = "364"\namounts = [true]\n', "operators.MCI.amounts", "positive integers"),
        ('[operators.MCI]\ncurrency = "364"\namounts = [1]\nstep = 1\n', "operators.MCI.step", "not both"),
        ('[operators.MCI]\ncurrency = "364"\nminimum = 1\nmaximum = -5\n', "operators.MCI.maximum", "positive integer"),
        ('[operators.MCI]\ncurrency = "364"\nminimum = 9\nmaximum = 5\n', "operators.MCI.minimum", "greater than"),
        ('[operators.MCI]\ncurrency = "364"\namounts = [1]\nmaximun = 5\n', "operators.MCI.maximun", "unknown key"),
        ('[operators.MCI]\ncurrency = "364"\namounts = [1]\nprefixes = ["0912"]\n', None, None),  # digits: allowed
        ('[operators.MCI]\ncurrency = "364"\namounts = [1]\nprefixes = ["+98912"]\n', "operators.MCI.prefixes", "digit"),
        ('[operators.MCI]\ncurrency = "364"\namounts = [1]\nprefixes = "98912"\n', "operators.MCI.prefixes", "list"),
        ('[operators.MCI]\ncurrency = "364"\namounts = [1]\ncarrier_names = [""]\n', "operators.MCI.carrier_names", "non-empty"),
        ('[operators.MCI]\ncurrency = "364"\namounts = [1]\nname = 5\n', "operators.MCI.name", "string"),
        ('[operators."M C I"]\ncurrency = "364"\namounts = [1]\n', "operators.M C I", "operator id"),
        (
            VALID_OPERATOR + '[operators.IRANCELL]\ncurrency = "364"\namounts = [1]\nprefixes = ["98912"]\n',
            "operators.IRANCELL.prefixes",
            "already routed to MCI",
        ),
        (
            VALID_OPERATOR + 'carrier_names = ["X"]\n[operators.IRANCELL]\ncurrency = "364"\namounts = [1]\ncarrier_names = ["X"]\n',
            "operators.IRANCELL.carrier_names",
            "already mapped to MCI",
        ),
    ],
)
def test_routes_errors_name_the_file_and_the_key(tmp_path, toml, key, problem):
    routes = _write(tmp_path, "routes.toml", toml)
    if key is None:
        Router.from_files(routes, None)
        return
    with pytest.raises(RoutingConfigError) as excinfo:
        Router.from_files(routes, None)
    message = str(excinfo.value)
    assert message.startswith(f"{routes}: {key}: "), message
    assert problem in message


def test_unreadable_or_malformed_routes_file_is_a_config_error(tmp_path):
    with pytest.raises(RoutingConfigError, match="missing.toml"):
        Router.from_files(tmp_path / "missing.toml", None)
    broken = _write(tmp_path, "broken.toml", "[operators.MCI\n")
    with pytest.raises(RoutingConfigError, match=r"broken\.toml: invalid TOML.*line 1"):
        Router.from_files(broken, None)


@pytest.mark.parametrize(
    ("csv", "line", "problem"),
    [
        ("989121234567,MCI\n", 1, "header"),
        ("msisdn,operator\n989121234567,MCI\n09121234568,MCI\n", 3, "international digits"),
        ("msisdn,operator\n# comment\n\n98912123456x,MCI\n", 4, "international digits"),
        ("msisdn,operator\n989121234567,NOBODY\n", 2, "unknown operator 'NOBODY'"),
        ("msisdn,operator\n989121234567\n", 2, "expected 2 fields"),
        ("msisdn,operator\n989121234567,MCI,extra\n", 2, "expected 2 fields"),
        ("msisdn,operator\n989121234567,MCI\n989121234567,MCI\n", 3, "more than once"),
        ("# only a comment\n", 1, "header"),
    ],
)
def test_ported_errors_name_the_file_and_the_line(tmp_path, csv, line, problem):
    routes = _write(tmp_path, "routes.toml", VALID_OPERATOR)
    ported = _write(tmp_path, "ported.csv", csv)
    with pytest.raises(RoutingConfigError) as excinfo:
        Router.from_files(routes, ported)
    message = str(excinfo.value)
    assert message.startswith(f"{ported}: line {line}: "), message
    assert problem in message


def test_ported_file_tolerates_comments_blank_lines_spaces_and_a_byte_order_mark(tmp_path):
    routes = _write(tmp_path, "routes.toml", VALID_OPERATOR)
    ported = tmp_path / "ported.csv"
    ported.write_text("\ufeff# exported from the porting database\nmsisdn, operator\n\n 989351234567 , MCI \r\n", encoding="utf-8")
    router = Router.from_files(routes, ported)
    assert router.route("989351234567") == RouteMatch("MCI", "ported", "989351234567")


def test_missing_ported_file_is_a_config_error(tmp_path):
    routes = _write(tmp_path, "routes.toml", VALID_OPERATOR)
    with pytest.raises(RoutingConfigError, match="nope.csv"):
        Router.from_files(routes, tmp_path / "nope.csv")
