"""Operator adapters, pure: what each dialect puts on the wire and how every answer
code of INTERFACES.md table 2.4 reads for the acquirer."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

import msgspec

from switch.providers.base import OperatorReversal, TopUp
from switch.providers.adapters import adapter_for

TOPUP = TopUp(txn_id="a" * 32, acquirer_id="603799", tracking_code="RRN000000001", msisdn="989121110001",
              amount=100_000, currency="364", stan="000042",
              sent_at=datetime(2026, 11, 22, 10, 11, 12, tzinfo=timezone.utc))

TABLE_2_4 = [  # meaning, opa87, opb93, opcjson (status, reason), to the acquirer
    ("approved", "00", "000", ("OK", None), "00"),
    ("declined", "05", "100", ("REJECTED", "DECLINED"), "05"),
    ("invalid amount", "13", "110", ("REJECTED", "INVALID_AMOUNT"), "13"),
    ("unknown subscriber", "14", "111", ("REJECTED", "INVALID_MSISDN"), "14"),
    ("barred", "57", "119", ("REJECTED", "BARRED"), "57"),
    ("duplicate at the operator", "94", "913", ("REJECTED", "DUPLICATE"), "96"),
    ("operator error", "96", "909", ("ERROR", "INTERNAL"), "96"),
    ("any other code", "77", "999", ("REJECTED", "SOMETHING_NEW"), "05"),
]


def adapters():
    return {name: adapter_for(name, "MCI", "99001", "AIRSW001", secret="s3cret")
            for name in ("opa87", "opb93", "opcjson")}


@pytest.mark.parametrize("meaning, opa87, opb93, opcjson, expected", TABLE_2_4, ids=[r[0] for r in TABLE_2_4])
def test_every_operator_answer_maps_to_the_acquirers_code_as_in_table_2_4(meaning, opa87, opb93, opcjson, expected):
    a = adapters()
    request_a = a["opa87"].top_up(TOPUP)
    answer_a = {**request_a, "t": "0210", "39": opa87}
    request_b = a["opb93"].top_up(TOPUP)
    answer_b = {**request_b, "t": "1210", "39": opb93}
    status, reason = opcjson
    answer_c = {"type": "recharge_result", "ref": TOPUP.txn_id, "status": status, "reason": reason}
    assert a["opa87"].parse_answer(answer_a, TOPUP).response_code == expected
    assert a["opb93"].parse_answer(answer_b, TOPUP).response_code == expected
    assert a["opcjson"].parse_answer(answer_c, TOPUP).response_code == expected


def test_opa87_top_up_carries_the_fields_of_the_spec_and_the_tracking_code_unchanged():
    message = adapters()["opa87"].top_up(TOPUP)
    assert message["t"] == "0200" and message["2"] == "989121110001" and message["3"] == "000000"
    assert (message["4"], message["11"], message["32"], message["37"], message["41"], message["49"]) == \
        ("000000100000", "000042", "99001", "RRN000000001", "AIRSW001", "364")
    assert (message["7"], message["12"], message["13"]) == ("1122101112", "101112", "1122")


def test_opb93_top_up_is_a_1200_with_function_200_and_the_msisdn_in_102():
    message = adapters()["opb93"].top_up(TOPUP)
    assert (message["t"], message["24"], message["102"], message["32"], message["37"]) == \
        ("1200", "200", "989121110001", "99001", "RRN000000001")
    assert (message["11"], message["12"]) == ("000042", "261122101112")


def test_opcjson_recharge_uses_the_transaction_id_as_its_ref():
    message = adapters()["opcjson"].top_up(TOPUP)
    assert message == {"type": "recharge", "ref": TOPUP.txn_id, "msisdn": "989121110001", "amount": 100_000,
                       "currency": "364", "tracking": "RRN000000001"}


def test_an_iso_answer_whose_tracking_code_does_not_fit_is_not_an_approval():
    adapter = adapters()["opa87"]
    answer = {**adapter.top_up(TOPUP), "t": "0210", "39": "00", "37": "SOMEONEELSES"}
    assert adapter.parse_answer(answer, TOPUP).response_code == "05"


def test_accept_mode_handshakes():
    a = adapters()
    assert a["opa87"].handshake({"t": "0800", "7": "1122101010", "11": "000001", "70": "001"})["39"] == "00"
    assert a["opa87"].handshake({"t": "0800", "11": "000001", "70": "301"}) is None
    assert a["opb93"].handshake({"t": "1804", "11": "000001", "12": "261122101010", "24": "801",
                                 "32": "99001"})["39"] == "800"
    assert a["opcjson"].handshake({"type": "login", "operator": "MCI", "secret": "s3cret"}) == {"type": "login_ok"}
    assert a["opcjson"].handshake({"type": "login", "operator": "MCI", "secret": "wrong"}) is None
    assert a["opcjson"].handshake({"type": "login", "operator": "RIGHTEL", "secret": "s3cret"}) is None
    assert a["opcjson"].handshake({"type": "login", "operator": "MCI", "secret": 12}) is None


def test_echoes_from_the_operator_are_answered():
    a = adapters()
    assert a["opa87"].operator_request({"t": "0800", "7": "1122101010", "11": "000009", "70": "301"})["t"] == "0810"
    assert a["opb93"].operator_request({"t": "1804", "11": "000009", "12": "261122101010", "24": "831",
                                        "32": "99001"})["39"] == "800"
    assert a["opcjson"].operator_request({"type": "ping"}) == {"type": "pong"}
    assert a["opcjson"].operator_request({"type": "recharge_result", "ref": "x"}) is None


REVERSAL = OperatorReversal(txn_id="a" * 32, tracking_code="RRN000000001", msisdn="989121110001", amount=100_000,
                            currency="364", original_stan="000042",
                            original_sent_at=datetime(2026, 11, 22, 10, 11, 12, tzinfo=timezone.utc), attempt=0)


def test_opa87_reversal_is_0420_then_0421_and_names_the_original_in_90():
    adapter = adapters()["opa87"]
    first = adapter.reversal("000777", REVERSAL)
    assert (first["t"], first["11"], first["37"], first["4"]) == ("0420", "000777", "RRN000000001", "000000100000")
    assert first["90"] == "0200" + "000042" + "1122101112" + "00000099001" + "0" * 11 and len(first["90"]) == 42
    assert adapter.reversal("000778", msgspec.structs.replace(REVERSAL, attempt=1))["t"] == "0421"
    assert adapter.reversal_answer({"t": "0430", "39": "00"}).settled
    assert adapter.reversal_answer({"t": "0430", "39": "25"}).settled       # nothing to reverse: done
    assert not adapter.reversal_answer({"t": "0430", "39": "96"}).settled


def test_opb93_reversal_is_1420_function_400_with_56():
    adapter = adapters()["opb93"]
    message = adapter.reversal("000777", REVERSAL)
    assert (message["t"], message["24"], message["102"]) == ("1420", "400", "989121110001")
    assert message["56"] == "1200" + "000042" + "261122101112" + "05" + "99001"
    assert adapter.reversal_answer({"t": "1430", "39": "480"}).settled
    assert not adapter.reversal_answer({"t": "1430", "39": "909"}).settled


def test_opcjson_reversal_names_the_original_ref_and_repeats_with_the_same_ref():
    adapter = adapters()["opcjson"]
    reference = adapter.reversal_reference(REVERSAL, 1)
    assert reference == adapter.reversal_reference(msgspec.structs.replace(REVERSAL, attempt=3), 2)
    assert adapter.reversal(reference, REVERSAL) == {"type": "reverse", "ref": reference, "original_ref": "a" * 32}
    assert adapter.reversal_answer({"type": "reverse_result", "ref": reference, "status": "NOT_FOUND"}).settled
