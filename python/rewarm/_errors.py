"""Exceptions raised by rewarm. Every error from the Go core carries its wire
code and, for spec problems, the field at fault."""

from __future__ import annotations


class RewarmError(Exception):
    """Base class. ``code`` is the wire ErrorCode name, ``field`` the spec or
    request field at fault (empty when there is none)."""

    def __init__(self, message: str, code: str = "", field: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.field = field


class SpecError(RewarmError, ValueError):
    """A schedule spec or request argument was refused."""


class ProtocolError(RewarmError, RuntimeError):
    """The two ends disagree on the protocol, or a frame or the connection
    was refused (code PERMISSION_DENIED: the sidecar runs as another user)."""


class SessionNotFound(RewarmError, LookupError):
    """The session is unknown to the server (for example after a restart)."""


class ForkError(RewarmError, RuntimeError):
    """The in-process backend was used in a forked child process."""


class TransportError(RewarmError, ConnectionError):
    """The socket to the sidecar failed."""
