"""The operator's side of each operator dialect (INTERFACES.md 2.1-2.3), as pure functions of a message.

A host dialect reads one decoded message from the switch and says what it is
(`react`): a network message to answer now, a top-up or a reversal for the
simulator to decide, the switch's answer to our own handshake, or something to
log and ignore. It builds the operator's answers and, for dial mode, the
handshake the operator's host opens a link with. It holds no connection and no
state: whether the link is signed on is passed in. The wire itself (codec,
framing) is `switch.wire`; the asyncio side and the decisions are in
`simulators.operator`.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable
from dataclasses import dataclass
from datetime import datetime

from switch.wire import load_dialect


class Outcome(enum.Enum):
    """What the operator decided for a top-up; each dialect has its own code for it (table 2.4)."""
    APPROVED = "approved"
    DECLINED = "declined"
    INVALID_AMOUNT = "invalid amount"
    UNKNOWN_SUBSCRIBER = "unknown subscriber"
    BARRED = "barred"
    DUPLICATE = "duplicate"
    ERROR = "operator error"


# -- what a message from the switch is -----------------------------------------------------
@dataclass(frozen=True)
class Reply:
    """Answer at once (network management, refusals before sign-on)."""
    message: dict
    signed_on: bool | None = None   # the link's sign-on state after this message; None: unchanged
    code: str | None = None         # the answer code to count, when this is an answer to a top-up


@dataclass(frozen=True)
class TopUp:
    reference: tuple[Hashable, ...]   # the switch's own reference, with the dialect's name in front
    msisdn: str
    amount: int
    tracking_code: str
    request: dict


@dataclass(frozen=True)
class Reversal:
    reference: tuple[Hashable, ...]            # the reversal's own reference
    original_reference: tuple[Hashable, ...]   # the top-up's, as the ledger keys it
    request: dict


@dataclass(frozen=True)
class HandshakeAnswer:
    """The switch's answer to the sign-on (or login) we sent in dial mode."""
    accepted: bool
    detail: str = ""


@dataclass(frozen=True)
class Ignored:
    reason: str
    quiet: bool = False   # expected and harmless (a stray pong): not worth a warning


Reaction = Reply | TopUp | Reversal | HandshakeAnswer | Ignored


def _echo(message: dict, fields: tuple[str, ...]) -> dict:
    return {key: message[key] for key in fields if key in message}


def _digits(value, length: int | None = None) -> bool:
    return isinstance(value, str) and value.isdigit() and (length is None or len(value) == length)


# -- opa87 ---------------------------------------------------------------------------------
class Opa87Host:
    """opa87 (2.1): ISO 8583:1987 all ASCII. The switch's reference is 11 and 7."""

    name = "opa87"
    needs_sign_on = True
    SIGN_ON, SIGN_OFF, ECHO = "001", "002", "301"
    NETWORK_ECHO = ("7", "11", "41", "70")
    TOP_UP_ECHO = ("2", "3", "4", "7", "11", "32", "37", "41", "49")
    TOP_UP_REQUIRED = ("2", "4", "7", "11", "37")
    REVERSAL_ECHO = ("11", "37", "41")
    CODES = {Outcome.APPROVED: "00", Outcome.DECLINED: "05", Outcome.INVALID_AMOUNT: "13",
             Outcome.UNKNOWN_SUBSCRIBER: "14", Outcome.BARRED: "57", Outcome.DUPLICATE: "94",
             Outcome.ERROR: "96"}
    NOT_SIGNED_ON = "91"     # 2.1: "An operator may refuse traffic before sign-on (91)"
    REVERSED, UNKNOWN_ORIGINAL = "00", "25"

    def __init__(self, operator_id: str, institution_id: str, secret: str | None):
        self.wire = load_dialect(self.name)

    def handshake(self, stan: str, now: datetime) -> dict:
        return {"t": "0800", "7": now.strftime("%m%d%H%M%S"), "11": stan, "70": self.SIGN_ON}

    def react(self, message: dict, signed_on: bool) -> Reaction:
        mti = message.get("t")
        if mti == "0800":
            code = message.get("70")
            if code not in (self.SIGN_ON, self.SIGN_OFF, self.ECHO):
                return Ignored(f"0800 with 70={code!r}")
            new_state = {self.SIGN_ON: True, self.SIGN_OFF: False}.get(code)
            return Reply({**_echo(message, self.NETWORK_ECHO), "t": "0810", "39": "00"}, signed_on=new_state)
        if mti == "0810":
            if message.get("70") == self.SIGN_ON:
                return HandshakeAnswer(message.get("39") == "00", f"39={message.get('39')!r}")
            return Ignored(f"0810 with 70={message.get('70')!r} answers nothing we sent")
        if mti == "0200":
            if not signed_on:
                return Reply({**_echo(message, self.TOP_UP_ECHO), "t": "0210", "39": self.NOT_SIGNED_ON},
                             code=self.NOT_SIGNED_ON)
            missing = [key for key in self.TOP_UP_REQUIRED if not message.get(key)]
            if missing:
                return Ignored(f"0200 without field {', '.join(missing)}")
            if not _digits(message["4"]):
                return Ignored(f"0200 with amount {message['4']!r}")
            return TopUp(reference=(self.name, message["11"], message["7"]), msisdn=message["2"],
                         amount=int(message["4"]), tracking_code=message["37"], request=message)
        if mti in ("0420", "0421"):
            if not signed_on:
                return Reply({**_echo(message, self.REVERSAL_ECHO), "t": "0430", "39": self.NOT_SIGNED_ON})
            original = message.get("90", "")
            # 90: original MTI 4, STAN 6, field 7 10, then institution ids
            if not _digits(original[:20], 20):
                return Ignored(f"{mti} with field 90 {original!r}")
            return Reversal((self.name, message.get("11"), message.get("7")),
                            (self.name, original[4:10], original[10:20]), message)
        return Ignored(f"MTI {mti} not handled")

    def answer_top_up(self, topup: TopUp, outcome: Outcome, approval_code: str, operator_ref: str) -> dict:
        answer = {**_echo(topup.request, self.TOP_UP_ECHO), "t": "0210", "39": self.CODES[outcome]}
        if outcome is Outcome.APPROVED:
            answer["38"] = approval_code
            answer["62"] = operator_ref
        return answer

    def answer_reversal(self, reversal: Reversal, found: bool) -> dict:
        return {**_echo(reversal.request, self.REVERSAL_ECHO), "t": "0430", "39": self.reversal_code(found)}

    def reversal_code(self, found: bool) -> str:
        return self.REVERSED if found else self.UNKNOWN_ORIGINAL


# -- opb93 ---------------------------------------------------------------------------------
class Opb93Host:
    """opb93 (2.2): ISO 8583:1993, binary bitmap. The switch's reference is 11 and 12."""

    name = "opb93"
    needs_sign_on = True
    TOP_UP, REVERSAL, SIGN_ON, SIGN_OFF, ECHO = "200", "400", "801", "802", "831"
    NETWORK_ACCEPTED = "800"
    NETWORK_ECHO = ("11", "12", "24", "32")
    TOP_UP_ECHO = ("3", "4", "11", "12", "32", "37", "49", "102")
    TOP_UP_REQUIRED = ("4", "11", "12", "37", "102")
    REVERSAL_ECHO = TOP_UP_ECHO
    CODES = {Outcome.APPROVED: "000", Outcome.DECLINED: "100", Outcome.INVALID_AMOUNT: "110",
             Outcome.UNKNOWN_SUBSCRIBER: "111", Outcome.BARRED: "119", Outcome.DUPLICATE: "913",
             Outcome.ERROR: "909"}
    # The spec names no refusal before sign-on for opb93; 909 (malfunction) reads as "cannot serve now".
    NOT_SIGNED_ON = "909"
    REVERSED, UNKNOWN_ORIGINAL = "400", "480"

    def __init__(self, operator_id: str, institution_id: str, secret: str | None):
        self.wire = load_dialect(self.name)
        self.institution_id = institution_id

    def handshake(self, stan: str, now: datetime) -> dict:
        return {"t": "1804", "11": stan, "12": now.strftime("%y%m%d%H%M%S"), "24": self.SIGN_ON,
                "32": self.institution_id}

    def react(self, message: dict, signed_on: bool) -> Reaction:
        mti = message.get("t")
        function = message.get("24")
        if mti == "1804":
            if function not in (self.SIGN_ON, self.SIGN_OFF, self.ECHO):
                return Ignored(f"1804 with 24={function!r}")
            new_state = {self.SIGN_ON: True, self.SIGN_OFF: False}.get(function)
            return Reply({**_echo(message, self.NETWORK_ECHO), "t": "1814", "39": self.NETWORK_ACCEPTED},
                         signed_on=new_state)
        if mti == "1814":
            if function == self.SIGN_ON:
                return HandshakeAnswer(message.get("39") == self.NETWORK_ACCEPTED, f"39={message.get('39')!r}")
            return Ignored(f"1814 with 24={function!r} answers nothing we sent")
        if mti == "1200":
            if function != self.TOP_UP:
                return Ignored(f"1200 with 24={function!r}")
            if not signed_on:
                return Reply({**_echo(message, self.TOP_UP_ECHO), "t": "1210", "39": self.NOT_SIGNED_ON},
                             code=self.NOT_SIGNED_ON)
            missing = [key for key in self.TOP_UP_REQUIRED if not message.get(key)]
            if missing:
                return Ignored(f"1200 without field {', '.join(missing)}")
            if not _digits(message["4"]):
                return Ignored(f"1200 with amount {message['4']!r}")
            return TopUp(reference=(self.name, message["11"], message["12"]), msisdn=message["102"],
                         amount=int(message["4"]), tracking_code=message["37"], request=message)
        if mti in ("1420", "1421"):
            if not signed_on:
                return Reply({**_echo(message, self.REVERSAL_ECHO), "t": "1430", "39": self.NOT_SIGNED_ON})
            original = message.get("56", "")
            # 56: original MTI 4, STAN 6, field 12 12, then the original's 32 as LLVAR
            if function != self.REVERSAL or not _digits(original[:22], 22):
                return Ignored(f"{mti} with 24={function!r}, 56={original!r}")
            return Reversal((self.name, message.get("11"), message.get("12")),
                            (self.name, original[4:10], original[10:22]), message)
        return Ignored(f"MTI {mti} not handled")

    def answer_top_up(self, topup: TopUp, outcome: Outcome, approval_code: str, operator_ref: str) -> dict:
        answer = {**_echo(topup.request, self.TOP_UP_ECHO), "t": "1210", "39": self.CODES[outcome]}
        if outcome is Outcome.APPROVED:
            answer["38"] = approval_code
            answer["63"] = operator_ref
        return answer

    def answer_reversal(self, reversal: Reversal, found: bool) -> dict:
        return {**_echo(reversal.request, self.REVERSAL_ECHO), "t": "1430", "39": self.reversal_code(found)}

    def reversal_code(self, found: bool) -> str:
        return self.REVERSED if found else self.UNKNOWN_ORIGINAL


# -- opcjson -------------------------------------------------------------------------------
class OpcJsonHost:
    """opcjson (2.3): one JSON object a line. The switch's reference is `ref`."""

    name = "opcjson"
    needs_sign_on = False   # the login is the dialing side's, and only in the switch's accept mode
    # Codes as "status reason", the keys of codecs/opcjson.json's answer table.
    CODES = {Outcome.APPROVED: "OK", Outcome.DECLINED: "REJECTED DECLINED",
             Outcome.INVALID_AMOUNT: "REJECTED INVALID_AMOUNT", Outcome.UNKNOWN_SUBSCRIBER: "REJECTED INVALID_MSISDN",
             Outcome.BARRED: "REJECTED BARRED", Outcome.DUPLICATE: "REJECTED DUPLICATE",
             Outcome.ERROR: "ERROR INTERNAL"}
    REVERSED, UNKNOWN_ORIGINAL = "OK", "NOT_FOUND"

    def __init__(self, operator_id: str, institution_id: str, secret: str | None):
        self.wire = load_dialect(self.name)
        self.operator_id = operator_id
        self.secret = secret

    def handshake(self, stan: str, now: datetime) -> dict:
        return {"type": "login", "operator": self.operator_id, "secret": self.secret}

    @staticmethod
    def _is_ref(value) -> bool:
        # A ref is matched as sent; the spec does not type it, so a string or an integer.
        return isinstance(value, (str, int)) and not isinstance(value, bool) and value != ""

    def react(self, message: dict, signed_on: bool) -> Reaction:
        kind = message["type"]
        if kind == "ping":
            return Reply({"type": "pong"})
        if kind == "recharge":
            ref, msisdn, amount, tracking = (message.get(key) for key in ("ref", "msisdn", "amount", "tracking"))
            if not self._is_ref(ref):
                return Ignored(f"recharge with ref {ref!r}")
            if not isinstance(msisdn, str) or not msisdn:
                return Ignored(f"recharge {ref!r} with msisdn {msisdn!r}")
            if not isinstance(amount, int) or isinstance(amount, bool) or amount < 0:
                return Ignored(f"recharge {ref!r} with amount {amount!r}")
            if not isinstance(tracking, str):
                return Ignored(f"recharge {ref!r} with tracking {tracking!r}")
            return TopUp(reference=(self.name, ref), msisdn=msisdn, amount=amount, tracking_code=tracking,
                         request=message)
        if kind == "reverse":
            ref, original = message.get("ref"), message.get("original_ref")
            if not self._is_ref(ref) or not self._is_ref(original):
                return Ignored(f"reverse with ref {ref!r}, original_ref {original!r}")
            return Reversal((self.name, ref), (self.name, original), message)
        if kind == "login_ok":
            return HandshakeAnswer(True)
        if kind == "pong":
            return Ignored("pong", quiet=True)
        return Ignored(f"type {kind!r} not handled")

    def answer_top_up(self, topup: TopUp, outcome: Outcome, approval_code: str, operator_ref: str) -> dict:
        status, _, reason = self.CODES[outcome].partition(" ")
        return {"type": "recharge_result", "ref": topup.request["ref"], "status": status, "reason": reason or None,
                "op_txn_id": operator_ref if outcome is Outcome.APPROVED else None}

    def answer_reversal(self, reversal: Reversal, found: bool) -> dict:
        return {"type": "reverse_result", "ref": reversal.request["ref"], "status": self.reversal_code(found)}

    def reversal_code(self, found: bool) -> str:
        return self.REVERSED if found else self.UNKNOWN_ORIGINAL


HOSTS = {host.name: host for host in (Opa87Host, Opb93Host, OpcJsonHost)}
OperatorHost = Opa87Host | Opb93Host | OpcJsonHost


def host_dialect(name: str, operator_id: str, institution_id: str, secret: str | None) -> OperatorHost:
    try:
        host = HOSTS[name]
    except KeyError:
        raise ValueError(f"no operator simulator for dialect {name!r} (known: {', '.join(HOSTS)})") from None
    return host(operator_id, institution_id, secret)
