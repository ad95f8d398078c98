"""The one error tree of airswitch.

    AirswitchError
      ConfigError              a configuration that does not validate (file, key, problem)
      LocalProtocolError       our own misuse, a bug here (switch.flow.states.IllegalTransition)
      RemoteProtocolError      a peer broke the wire contract; `closes_connection` says what survives
        FrameError             the byte stream is broken: the connection is closed
        MessageDecodeError     one message does not decode: the connection survives
      JournalError             switch.journal: not stored or not read (the caller answers 96 or 91)
      LedgerError              switch.accounts: a float movement refused or not known to be done
      ProviderError            switch.providers.base: NotSent (nothing left), NoAnswer (outcome unknown)

Split as h11 splits it: local is ours, remote is the peer's. The channels and operator
links read `closes_connection` rather than keeping a table of their own. The pure
`routing` package imports nothing of the switch; its errors (InvalidMsisdn,
RoutingConfigError) are ValueErrors that the flow and the configuration translate.
"""

from __future__ import annotations


class AirswitchError(Exception):
    """Base of every error airswitch raises on purpose."""


class ConfigError(AirswitchError):
    """A configuration that does not validate; the message names file, key and problem."""


class LocalProtocolError(AirswitchError):
    """We tried to send something the dialect cannot carry (a bug on our side)."""


class RemoteProtocolError(AirswitchError):
    """The peer sent something that breaks the wire contract."""

    closes_connection = False


class FrameError(RemoteProtocolError):
    """The byte stream itself is broken (length header lies, frame over the cap):
    nothing after it can be trusted, so the connection is closed."""

    closes_connection = True


class MessageDecodeError(RemoteProtocolError):
    """One framed message does not decode. The frame boundary is intact, so the
    connection survives; `partial` holds what could be read (MTI, 11, 37...) so
    the switch can still answer 30 where the spec asks it to."""

    def __init__(self, message: str, *, field: str | None = None, position: int | None = None,
                 partial: dict | None = None):
        super().__init__(message)
        self.field = field
        self.position = position
        self.partial = partial or {}
