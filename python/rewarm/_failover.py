"""A sidecar client that survives the sidecar.

If the socket fails mid-run (the sidecar was killed, say), the client keeps
computing in-process through the gopy dispatcher, and reconnects to the
socket with exponential backoff. Sessions and samplers move with it: the
client keeps each session's latest state blob (its spec, re-plans and
reports) and each sampler's spec, and recreates them on the other side. All
values are pure functions of that state, so the streams are bit-identical
whichever side computes them.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import DecodeError

from rewarm._client import same_server
from rewarm._errors import ProtocolError, TransportError
from rewarm._proto import rewarm_pb2 as pb
from rewarm._transport import ForkSafeLock, InProcessTransport, SocketTransport, request_timeout

# A reconnect attempt's wait for the sidecar's hello: a healthy one answers in
# well under a millisecond.
HELLO_TIMEOUT = 0.5
# Between attempts on a sidecar that accepts connections but does not answer
# (stopped with SIGSTOP, a hung host): it may be so for long, and each attempt
# stalls the training thread for up to HELLO_TIMEOUT.
FROZEN_MAX_BACKOFF = 60.0

log = logging.getLogger("rewarm")

# Request body -> the field that names a session or sampler.
_ID_FIELDS = {
    "get_lr": "session_id",
    "get_state": "session_id",
    "replan": "session_id",
    "report": "session_id",
    "close_session": "session_id",
    "get_batches": "sampler_id",
    "get_quotas": "sampler_id",
    "poll_control": "session_id",
}


@dataclass
class _Obj:
    kind: str  # "session" or "sampler"
    remote: int
    gen: int
    blob: bytes = b""  # session state
    # Re-plans and reports sent since blob was taken, replayed after it. The
    # blob is refetched only once the log outgrows what it already holds, so
    # a long run of reports costs O(1) each, not a growing blob per report.
    log: list[pb.Request] = field(default_factory=list)
    in_blob: int = 0
    spec: Any = None  # a sampler's OpenSampler message
    name: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class FailoverTransport:
    """Chooses the live side for each request and maps object ids."""

    kind = "socket"

    def __init__(
        self,
        path: str,
        first: SocketTransport | None,
        hello: bytes,
        backoff: tuple[float, float] = (0.05, 5.0),
        why_not: str | None = None,
    ) -> None:
        self.path = path
        self._hello = hello
        # One request at a time: a side change (the generation) and the
        # objects moved with it must not interleave with another thread's
        # request, which would send an id of one side to the other. Not
        # reentrant: nothing in a request calls back in, and a call from a
        # signal handler mid-request must not see a half-made side change.
        self._lock = ForkSafeLock()
        self._socket = first
        self._inproc: InProcessTransport | None = None
        self._gen = 0 if first is not None else 1
        self._objs: dict[int, _Obj] = {}
        self._ids = itertools.count(1)
        self._min_backoff, self._max_backoff = backoff
        self._backoff = self._min_backoff
        self._retry_at = 0.0 if first is not None else time.monotonic()
        self.failovers = 0
        self.reconnects = 0
        if first is not None:
            self._greet_on_reconnect(first, first.roundtrip(hello))
        if first is None:
            self._down(why_not or "the sidecar is not running")

    @property
    def on_socket(self) -> bool:
        return self._socket is not None

    # --- choosing a side ---------------------------------------------------

    def _down(self, why: str) -> None:
        if self._socket is not None:
            self._socket.close()
        self._socket = None
        self._gen += 1
        self.failovers += 1
        self._retry_at = time.monotonic() + self._backoff
        log.warning(
            "rewarm: sidecar at %s unavailable (%s); computing in-process until it is back", self.path, why
        )

    def _side(self) -> InProcessTransport | SocketTransport:
        if self._socket is None and time.monotonic() >= self._retry_at:
            sock = None
            try:
                # Short: a frozen sidecar accepts connections (the kernel queues
                # them) but never answers, and each try waits this long on the
                # training thread; it is set back below.
                sock = SocketTransport(self.path, timeout=min(HELLO_TIMEOUT, request_timeout()))
                self._greet_on_reconnect(sock, sock.roundtrip(self._hello))
                sock.set_timeout(request_timeout())
                self._socket = sock
                self._gen += 1
                self._backoff = self._min_backoff
                self.reconnects += 1
                log.warning("rewarm: reconnected to the sidecar at %s", self.path)
            except ProtocolError as e:
                # A sidecar of another version came up: stay in-process, say why.
                log.warning("rewarm: %s; computing in-process", e)
                self._backoff = self._max_backoff
                self._retry_at = time.monotonic() + self._backoff
            except (OSError, TransportError):
                if sock is None:  # nothing listening: cheap to try again soon
                    self._backoff = min(self._backoff * 2, self._max_backoff)
                else:  # connected, no answer: every try costs a hello wait
                    sock.close()
                    self._backoff = min(max(self._backoff, self._max_backoff) * 2, FROZEN_MAX_BACKOFF)
                self._retry_at = time.monotonic() + self._backoff
        if self._socket is not None:
            return self._socket
        if self._inproc is None:
            self._inproc = InProcessTransport()
            resp = pb.Response.FromString(self._inproc.roundtrip(self._hello))
            if resp.WhichOneof("body") != "hello":
                raise TransportError("the in-process dispatcher refused the handshake")
        return self._inproc

    def _greet_on_reconnect(self, sock: SocketTransport, reply: bytes) -> None:
        """Check a new socket's hello reply and arm the socket to shake hands
        again when it reconnects by itself (a forked child, an idle close):
        with the same sidecar instance only; another one fails the socket, so
        this transport moves the objects over as after any failure."""
        try:
            resp = pb.Response.FromString(reply)
        except DecodeError as exc:
            raise TransportError(
                f"rewarm: the server at {self.path} answered the handshake with a reply that is not a rewarm "
                f"message ({exc})",
                code="MALFORMED",
            ) from exc
        if resp.WhichOneof("body") == "error":
            # The server's reason (a protocol version mismatch names both).
            raise ProtocolError(
                f"rewarm: the sidecar at {self.path} refused the handshake: {resp.error.message}",
                code=pb.ErrorCode.Name(resp.error.code).removeprefix("ERROR_CODE_"),
            )
        if resp.WhichOneof("body") != "hello":
            raise TransportError(f"the sidecar at {self.path} refused the handshake", code="UNAVAILABLE")
        sock.greeting, sock.check_greeting = (
            self._hello,
            same_server(self.path, resp.hello.instance, failover=True),
        )

    # --- moving objects -------------------------------------------------------

    def _raw(self, side: Any, req: pb.Request) -> pb.Response:
        reply = side.roundtrip(req.SerializeToString())
        try:
            return pb.Response.FromString(reply)
        except DecodeError as exc:
            if side is self._inproc:  # a bug of this build, not a bad peer
                raise ProtocolError(
                    f"rewarm: the in-process dispatcher's reply is not a rewarm message ({exc})",
                    code="MALFORMED",
                ) from exc
            # Framed, but not a rewarm message: that socket cannot be trusted.
            raise TransportError(
                f"rewarm: the sidecar at {self.path} sent a {len(reply)}-byte reply that is not a rewarm "
                f"message ({exc})",
                code="MALFORMED",
            ) from exc

    def _place(self, side: Any, obj: _Obj) -> pb.Response | None:
        """Recreate obj on side, if it lives on another generation. A refusal
        (a sidecar at its object limit, say) is returned as the side's error
        reply: the side answered, so it is not down."""
        if obj.gen == self._gen:
            return None
        if obj.kind == "session":
            resp = self._raw(side, pb.Request(restore_state=pb.RestoreState(msgpack=obj.blob, name=obj.name)))
            if resp.WhichOneof("body") == "error":
                return resp
            obj.remote = resp.session.session_id
            for rec in obj.log:
                op = rec.WhichOneof("body")
                getattr(rec, op).session_id = obj.remote
                if (r := self._raw(side, rec)).WhichOneof("body") == "error":
                    return r
        else:
            resp = self._raw(side, pb.Request(open_sampler=obj.spec))
            if resp.WhichOneof("body") == "error":
                return resp
            obj.remote = resp.sampler.sampler_id
        if not obj.remote:
            raise TransportError(f"could not recreate a {obj.kind} on the {side.kind} side")
        obj.gen = self._gen
        return None

    def _refresh(self, side: Any, obj: _Obj) -> None:
        resp = self._raw(side, pb.Request(get_state=pb.GetState(session_id=obj.remote, step=0)))
        if resp.WhichOneof("body") == "state":
            obj.blob = resp.state.msgpack
            obj.in_blob += len(obj.log)
            obj.log.clear()

    # --- the transport interface ------------------------------------------------

    def roundtrip(self, request: bytes) -> bytes:
        with self._lock:
            return self._roundtrip(request)

    def _roundtrip(self, request: bytes) -> bytes:
        req = pb.Request.FromString(request)
        body = req.WhichOneof("body")
        for _ in range(3):
            side = self._side()
            try:
                return self._send(side, req, body).SerializeToString()
            except TransportError as exc:
                if side is self._inproc:
                    raise
                self._down(str(exc))
        raise TransportError(f"rewarm: no side answered a {body} request", code="UNAVAILABLE")

    def _send(self, side: Any, req: pb.Request, body: str | None) -> pb.Response:
        out = pb.Request()
        out.CopyFrom(req)
        obj = None
        if body in _ID_FIELDS:
            msg = getattr(out, body)
            fld = _ID_FIELDS[body]
            obj = self._objs.get(getattr(msg, fld))
            if obj is None:
                if body == "poll_control":
                    setattr(msg, fld, 0)
                else:
                    return pb.Response(
                        id=req.id,
                        error=pb.Error(
                            code=pb.ERROR_CODE_NOT_FOUND,
                            field=fld,
                            message=f"no session or sampler with id {getattr(msg, fld)}",
                        ),
                    )
            else:
                if (refused := self._place(side, obj)) is not None:
                    refused.id = req.id
                    return refused
                setattr(msg, fld, obj.remote)
        if body == "poll_control" and side is not self._socket:
            return pb.Response(id=req.id, controls=pb.Controls())  # controls live in the sidecar
        resp = self._raw(side, out)
        kind = resp.WhichOneof("body")
        if kind == "error" and obj is not None and _gone(resp, fld):
            # Reaped while this client was away (an idle-closed connection
            # past --orphan-ttl): closing it is done; anything else recreates
            # it from what the client holds, once.
            if body == "close_session":
                del self._objs[req.close_session.session_id]
                return pb.Response(id=req.id, closed=pb.Closed())
            obj.gen = -1
            if (refused := self._place(side, obj)) is not None:
                refused.id = req.id
                return refused
            setattr(msg, fld, obj.remote)
            resp = self._raw(side, out)
            kind = resp.WhichOneof("body")
        if kind == "error":
            return resp
        if body in ("open_session", "restore_state"):
            logical = next(self._ids)
            o = _Obj("session", resp.session.session_id, self._gen, name=resp.session.name)
            self._refresh(side, o)
            self._objs[logical] = o
            resp.session.session_id = logical
        elif body == "open_sampler":
            logical = next(self._ids)
            spec = pb.OpenSampler()
            spec.CopyFrom(out.open_sampler)  # the spec in whichever form it came
            self._objs[logical] = _Obj("sampler", resp.sampler.sampler_id, self._gen, spec=spec)
            resp.sampler.sampler_id = logical
        elif body in ("replan", "report") and obj is not None:
            rec = pb.Request()
            getattr(rec, body).CopyFrom(getattr(out, body))
            obj.log.append(rec)
            if len(obj.log) > max(64, obj.in_blob):
                self._refresh(side, obj)
            if kind == "session":
                resp.session.session_id = req.replan.session_id
        elif body == "close_session" and obj is not None:
            del self._objs[req.close_session.session_id]
        return resp

    def close(self) -> None:
        with self._lock:
            if self._socket is not None:
                self._socket.close()
            if self._inproc is not None:
                self._inproc.close()


def hello_bytes(client: str) -> bytes:
    return pb.Request(
        id=0, hello=pb.Hello(protocol_version=pb.PROTOCOL_VERSION_CURRENT, client=client)
    ).SerializeToString()


def _gone(resp: pb.Response, fld: str) -> bool:
    """Whether resp says the object named by request field fld does not exist."""
    return resp.error.code == pb.ERROR_CODE_NOT_FOUND and resp.error.field == fld


def connect_failover(path: str, client: str, must_connect: bool) -> FailoverTransport:
    """A failover transport to the sidecar at path. With must_connect, the
    first connection must succeed (a misconfigured path fails loudly);
    otherwise the run starts in-process and keeps trying the socket."""
    why = None
    try:
        first: SocketTransport | None = SocketTransport(path)
    except TransportError as e:
        if must_connect:
            raise
        first = None
        if isinstance(e.__cause__, OSError):  # the reason, e.g. a path too long for a socket
            why = f"cannot connect: {e.__cause__.strerror or e.__cause__}"
    return FailoverTransport(os.fspath(path), first, hello_bytes(client), why_not=why)
