"""ISO 8583 messages (bank87, pos87) to the core's requests and back (INTERFACES.md 1.3-1.5).

What is wire, not business, lives here: which message type and processing code ask for
what, which fields are mandatory (a missing or malformed one is the request's `problem`,
answered 30 by the core), which fields an answer echoes, field 48's TLV, field 54, field 90,
and network management (0800), which belongs to the connection.
"""

from __future__ import annotations

from switch.flow.codes import ResponseCode
from switch.flow.messages import Answer, Kind, Original, Payer, Request
from switch.wire import Dialect

NETWORK_CODES = {"001": "sign-on", "002": "sign-off", "301": "echo"}
SIGN_ON, SIGN_OFF = "001", "002"
TOP_UP, BALANCE_INQUIRY, OPERATOR_INQUIRY = "000000", "310000", "300000"
# (message type, processing code) -> what is asked, and the dialect's list of mandatory fields.
KINDS = {
    ("0200", TOP_UP): (Kind.TOP_UP, "0200/000000"),
    ("0201", TOP_UP): (Kind.REPEAT, "0200/000000"),
    ("0200", BALANCE_INQUIRY): (Kind.BALANCE, "0200/310000"),
    ("0100", OPERATOR_INQUIRY): (Kind.INQUIRY, "0100"),
}
REVERSALS = {"0400": False, "0420": True, "0421": True}   # message type -> advice
HANDLED = frozenset({"0800", "0100", "0200", "0201", "0400", "0420", "0421"})


def response_mti(mti: str) -> str:
    """0200 -> 0210, 0800 -> 0810; a repeat (0201) is answered as its original (0210)."""
    return mti[:2] + str(int(mti[2]) + 1) + "0"


def is_request(mti: str) -> bool:
    """ISO 8583 message function (3rd digit): 0 request, 2 advice, 4 notification."""
    return len(mti) == 4 and mti.isdigit() and mti[2] in "024"


def mask_card(pan: str | None) -> str | None:
    if not pan:
        return None
    if len(pan) < 13:
        return "*" * len(pan)
    return pan[:6] + "*" * (len(pan) - 10) + pan[-4:]


def read_tlv(field_48: str | None) -> dict[str, str]:
    """Field 48 private TLV: tag 2 chars, length 3 digits, value. Reads what parses."""
    tags: dict[str, str] = {}
    if not field_48:
        return tags
    i = 0
    while i + 5 <= len(field_48):
        tag, size = field_48[i:i + 2], field_48[i + 2:i + 5]
        if not size.isdigit():
            break
        end = i + 5 + int(size)
        if end > len(field_48):
            break
        tags[tag] = field_48[i + 5:end]
        i = end
    return tags


def write_tlv(tags: dict[str, str]) -> str:
    return "".join(f"{tag}{len(value):03d}{value}" for tag, value in tags.items() if value is not None)


def additional_amount(amount_type: str, amount: int, currency: str = "364") -> str:
    """One field-54 entry: account type 00, amount type, currency, C/D, 12 digits."""
    return f"00{amount_type}{currency}{'C' if amount >= 0 else 'D'}{abs(amount):012d}"


def read_original(field_90: str | None) -> Original | None:
    """Field 90: original MTI 4, STAN 6, field 7 10, acquirer id 11, forwarding id 11."""
    if field_90 is None or len(field_90) != 42:
        return None
    return Original(kind=field_90[0:4], trace=field_90[4:10], transmitted_at=field_90[10:20],
                    acquirer_id=field_90[20:31])


class IsoTranslator:
    """One ISO dialect's requests and answers, by the rules in its codec file."""

    def __init__(self, dialect: Dialect, channel: str):
        self.channel = channel
        rules = dialect.rules
        self._mandatory: dict[str, list[str]] = rules["mandatory"]
        self._numeric = frozenset(rules["numeric_fields"])
        self._echo_financial: list[str] = rules["echo"]["financial"]
        self._echo_network: list[str] = rules["echo"]["network"]

    def kind_of(self, message: dict) -> tuple[Kind, str] | ResponseCode:
        """What a request asks for and its mandatory-field list, or the code it is answered with at once
        (30 without a processing code, 12 for what the switch does not do)."""
        mti = message["t"]
        if mti in REVERSALS:
            return Kind.REVERSAL, "0400"
        if mti in ("0200", "0201") and message.get("3") is None:
            return ResponseCode.FORMAT_ERROR
        return KINDS.get((mti, message.get("3")), ResponseCode.INVALID_TXN)

    def request(self, message: dict, kind: Kind, mandatory: str | None, payer: Payer,
                sales_channel: str | None = None, arrived: float = 0.0) -> Request:
        amount = message.get("4")
        mti = message["t"]
        tags = read_tlv(message.get("48"))
        return Request(
            kind=kind, channel=self.channel, payer=payer, acquirer_id=message.get("32", ""),
            tracking_code=message.get("37", ""), msisdn=message.get("103"),
            amount=int(amount) if amount and amount.isdigit() else None, currency=message.get("49"),
            product=tags.get("PC"), sales_channel=tags.get("CH") or sales_channel, message_type=mti,
            trace=message.get("11", ""), transmitted_at=message.get("7"), terminal_id=message.get("41"),
            merchant_id=message.get("42"), card_masked=mask_card(message.get("2")),
            original=read_original(message.get("90")) if kind is Kind.REVERSAL else None,
            advice=REVERSALS.get(mti, False),
            problem=self.format_problem(message, mandatory) if mandatory else None, arrived=arrived)

    def answer(self, message: dict, answer: Answer) -> dict:
        reply = self.refusal(message, answer.response_code)
        if answer.approval_code is not None:
            reply["38"] = answer.approval_code
        if answer.operator_id is not None:
            reply["44"] = answer.operator_id
        if answer.tags:
            reply["48"] = write_tlv(answer.tags)
        if answer.balance is not None:
            balance = answer.balance
            reply["54"] = additional_amount("01", balance.ledger, balance.currency) + \
                additional_amount("02", balance.available, balance.currency)
        return reply

    def refusal(self, message: dict, code: str) -> dict:
        """The answer to `message` with only a response code: the request's echo and 39."""
        reply = {key: message[key] for key in self._echo_financial if key in message}
        reply["t"] = response_mti(message["t"])
        reply["39"] = str(code)
        return reply

    def network(self, message: dict) -> dict:
        """0800 -> 0810: sign-on, sign-off and echo are the connection's business (INTERFACES.md 1.4)."""
        missing = self.format_problem(message, "0800")
        code = ResponseCode.FORMAT_ERROR if missing else \
            (ResponseCode.APPROVED if message["70"] in NETWORK_CODES else ResponseCode.INVALID_TXN)
        reply = {key: message[key] for key in self._echo_network if key in message}
        reply["t"] = "0810"
        reply["39"] = str(code)
        return reply

    def format_problem(self, message: dict, kind: str) -> str | None:
        """The first mandatory field that is missing or malformed, described; None if all is well."""
        for field in self._mandatory[kind]:
            value = message.get(field)
            if value is None or value == "":
                return f"field {field} missing"
            if field in self._numeric and not value.isdigit():
                return f"field {field} not numeric"
        return None


def undecodable_answer(partial: dict) -> dict | None:
    """A message that does not decode is answered 30 when its MTI, 11 and 37 can still be read."""
    if all(key in partial for key in ("t", "11", "37")) and is_request(partial["t"]):
        return {"t": response_mti(partial["t"]), "11": partial["11"], "37": partial["37"],
                "39": str(ResponseCode.FORMAT_ERROR)}
    return None
