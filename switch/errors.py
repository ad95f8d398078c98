"""The one error tree of airswitch.

Split as h11 splits it: a `LocalProtocolError` is our own misuse (a bug here), a
`RemoteProtocolError` is a peer that misbehaved. Each remote error says whether the
connection survives it, so the I/O layer needs no table of its own.
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
