"""The two transports. Each moves serialized rewarm.v1 Request/Response bytes;
neither knows what is inside them.

* InProcessTransport calls the Go dispatcher compiled into this package with
  gopy, through buffers owned by Python (one call, no per-element copies).
* SocketTransport talks to `rewarm serve` over a Unix socket with 4-byte
  big-endian length framing.
"""

from __future__ import annotations

import ctypes
import gc
import os
import select
import socket
import struct
import threading
import weakref
from collections.abc import Callable
from typing import Any, Protocol

from rewarm._errors import ForkError, SpecError, TransportError

_HEADER = struct.Struct(">I")
MAX_REPLY = 1 << 30  # larger than any reply; the Go client's cap too
REQUEST_TIMEOUT = 60.0  # seconds a socket request may take, unless REWARM_REQUEST_TIMEOUT says otherwise


def request_timeout() -> float:
    """Seconds a socket request may wait for its reply: REWARM_REQUEST_TIMEOUT,
    or 60. After it a client without failover raises; one with failover
    computes in-process (so a stopped sidecar costs one timeout, then up to
    0.5 s per reconnect attempt, tried at growing intervals up to a minute)."""
    raw = os.environ.get("REWARM_REQUEST_TIMEOUT", "").strip()
    if not raw:
        return REQUEST_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise SpecError(f"REWARM_REQUEST_TIMEOUT={raw!r}: expected a positive number of seconds")
    return value


FORK_HELP = (
    "the Go runtime does not survive fork(), so calling it here would hang. Use backend='socket' "
    "(start `rewarm serve --socket PATH` and set REWARM_SOCKET), create DataLoader workers with "
    "multiprocessing_context='spawn' or 'forkserver', or keep rewarm calls in the main process."
)

# pid of the process that loaded the Go runtime, or None before the first load.
_native_pid: int | None = None
_native_module: Any = None


class _ForkedNative:
    """Stands in for the gopy extension in a forked child: handle bookkeeping
    becomes a no-op (so garbage collection cannot enter Go), anything else
    raises ForkError instead of hanging."""

    def __init__(self, parent: int) -> None:
        self._parent = parent

    def __getattr__(self, name: str) -> Any:
        if name in {"IncRef", "DecRef"}:
            return lambda *a, **k: None
        raise ForkError(
            f"rewarm: the in-process backend was loaded in process {self._parent} and this is its forked "
            f"child (pid {os.getpid()}); {FORK_HELP}",
            code="FORKED",
        )


def _after_fork_in_child() -> None:
    if _native_pid is None or _native_module is None:
        return
    guard = _ForkedNative(_native_pid)
    # The generated wrappers reach Go only through these module globals.
    for mod in (_native_module.rewarmgo, _native_module.go):
        mod._rewarmgo = guard


def _load_native() -> Any:
    global _native_pid, _native_module
    if _native_pid is not None and _native_pid != os.getpid():
        raise ForkError(
            f"rewarm: the in-process backend was loaded in process {_native_pid} and this is its forked "
            f"child (pid {os.getpid()}); {FORK_HELP}",
            code="FORKED",
        )
    if _native_module is None:
        try:
            from rewarm import _native
            from rewarm._native import rewarmgo  # noqa: F401
        except ImportError as exc:
            raise ImportError(
                f"rewarm's in-process extension (rewarm._native) is not built or does not load ({exc}). "
                "Install the package with `pip install .` (Go and a C compiler are needed at build time), "
                "or use backend='socket'."
            ) from exc
        # gopy v0.5.0 runs a full Go GC after every Python collection; drop it.
        gc.callbacks[:] = [cb for cb in gc.callbacks if getattr(cb, "__name__", "") != "_gopy_gc_cb"]
        _native_module = _native
        _native_pid = os.getpid()
        os.register_at_fork(after_in_child=_after_fork_in_child)
    return _native_module.rewarmgo


def in_forked_child() -> bool:
    """True when the Go runtime was loaded by a parent of this process."""
    return _native_pid is not None and _native_pid != os.getpid()


class Transport(Protocol):
    """What Client needs of a transport: one serialized Request in, one
    serialized Response out."""

    kind: str

    def roundtrip(self, request: bytes) -> bytes: ...

    def close(self) -> None: ...


class ForkSafeLock:
    """A lock that a forked child gets afresh. The child inherits a lock as
    it was at the fork: held, if another thread was mid-request then, by a
    thread the child does not have, so it would wait forever. The fresh one
    is made in the child before any of its threads runs, so they share it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held = self._lock
        _fork_safe_locks.add(self)

    def __enter__(self) -> None:
        lock = self._lock
        lock.acquire()
        self._held = lock

    def __exit__(self, *exc: object) -> None:
        # The lock taken: a thread that forked inside holds the old one.
        self._held.release()

    def locked(self) -> bool:
        return self._lock.locked()


_fork_safe_locks: weakref.WeakSet[ForkSafeLock] = weakref.WeakSet()


def _fresh_locks_in_child() -> None:
    for lock in list(_fork_safe_locks):
        lock._lock = threading.Lock()


os.register_at_fork(after_in_child=_fresh_locks_in_child)


# Buffers up to this size are kept for the next call; a larger request (up
# to 16 MiB) or reply (up to 8 MiB) gets one of its own, so one big call
# does not hold that much for the life of the client.
KEEP_BUFFER = 1 << 20


def _grown(need: int, have: int) -> int:
    """A buffer size for need bytes: doubling, so a growing series of calls
    reallocates rarely, but not past KEEP_BUFFER when need fits in it (a
    700 KiB call would otherwise get 1.4 MiB, never kept, every time)."""
    size = max(need, 2 * have)
    return min(size, KEEP_BUFFER) if need <= KEEP_BUFFER else need


class InProcessTransport:
    """Calls the Go dispatcher in this process."""

    kind = "inprocess"

    def __init__(self, buffer_size: int = 1 << 16) -> None:
        self._go = _load_native()
        self._pid = os.getpid()
        self._handle = self._go.NewHandle()
        self._lock = threading.Lock()
        self._in = ctypes.create_string_buffer(buffer_size)
        self._out = ctypes.create_string_buffer(buffer_size)

    def _check_fork(self) -> None:
        if os.getpid() != self._pid:
            raise ForkError(
                f"rewarm: this in-process backend was created in process {self._pid} and is being used in "
                f"its forked child (pid {os.getpid()}); {FORK_HELP}",
                code="FORKED",
            )

    def roundtrip(self, request: bytes) -> bytes:
        self._check_fork()
        with self._lock:
            n = len(request)
            inb = self._in
            if n > len(inb):
                inb = ctypes.create_string_buffer(_grown(n, len(inb)))
                if len(inb) <= KEEP_BUFFER:
                    self._in = inb
            ctypes.memmove(inb, request, n)
            out = self._out
            got = self._handle.Call(ctypes.addressof(inb), n, ctypes.addressof(out), len(out))
            if got < 0:
                out = ctypes.create_string_buffer(_grown(-got, len(out)))
                if len(out) <= KEEP_BUFFER:
                    self._out = out
                got = self._handle.Take(ctypes.addressof(out), len(out))
            return ctypes.string_at(ctypes.addressof(out), got)

    def close(self) -> None:
        # Nothing to release: the Go handle goes with its last reference. The
        # shared in-process client (rewarm._client.shared_client) relies on
        # close() being harmless.
        pass


class _ClosedBeforeReply(TransportError):
    """The connection closed before any byte of the reply arrived."""


class SocketTransport:
    """A connection to `rewarm serve`. Reconnects lazily after a transport
    error or in a forked child, and then first sends ``greeting`` (the
    client's Hello, set once the first handshake succeeded) and hands the
    reply to ``check_greeting``, which raises if the server refused it or is
    another server instance (a restarted sidecar, whose ids are not ours)."""

    kind = "socket"

    def __init__(self, path: str | os.PathLike[str], timeout: float | None = None) -> None:
        self.path = os.fspath(path)
        self.timeout: float | None = request_timeout() if timeout is None else timeout
        self.greeting: bytes | None = None
        self.check_greeting: Callable[[bytes], None] | None = None
        self._lock = ForkSafeLock()
        self._sock: socket.socket | None = None
        self._poll: select.poll | None = None
        self._pid = -1
        self._connect()

    def _connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect(self.path)
        except OSError as exc:
            s.close()
            raise TransportError(
                f"rewarm: cannot connect to the sidecar at {self.path}: {exc.strerror or exc}. "
                "Start it with `rewarm serve --socket PATH`, or unset REWARM_SOCKET to compute in-process.",
                code="UNAVAILABLE",
            ) from exc
        self._sock = s
        # poll, not select: select refuses descriptors past 1024, which a
        # training process can easily hold.
        self._poll = select.poll()
        self._poll.register(s, select.POLLIN | select.POLLHUP)
        self._pid = os.getpid()

    def _recv_exact(self, n: int) -> bytearray:
        assert self._sock is not None
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            k = self._sock.recv_into(view[got:], n - got)
            if k == 0:
                raise TransportError(
                    f"rewarm: the sidecar at {self.path} closed the connection", code="UNAVAILABLE"
                )
            got += k
        return buf

    def roundtrip(self, request: bytes) -> bytes:
        with self._lock:
            if self._sock is not None and self._pid == os.getpid() and self._peer_closed():
                self._drop()  # e.g. the server's --conn-idle-timeout: start afresh
            reused = self._sock is not None and self._pid == os.getpid()
            if not reused:
                self._reconnect()
            try:
                return self._exchange(request)
            except _ClosedBeforeReply as exc:
                # The server closed an idle connection just as the request
                # went out: it never read it (a server only closes a
                # connection with no request in flight). Once, on a new
                # connection to the same server instance (the greeting checks).
                if not reused or self.greeting is None:
                    raise TransportError(str(exc), code=exc.code) from exc
                self._reconnect()
                return self._exchange(request)

    def _reconnect(self) -> None:
        # A socket inherited across fork is shared with the parent: never use it.
        self._sock = None
        self._connect()
        if self.greeting is not None:
            reply = self._exchange(self.greeting)
            if self.check_greeting is not None:
                try:
                    self.check_greeting(reply)
                except BaseException:
                    self._drop()
                    raise

    def _peer_closed(self) -> bool:
        """Whether the server closed this connection while it was idle: the
        socket is then readable with nothing to read. Checked before sending
        so such a close never fails a request."""
        assert self._sock is not None and self._poll is not None
        try:
            if not self._poll.poll(0):  # no event: open and idle, the normal case
                return False
            # Readable (or hung up): an empty peek is the server's close.
            return self._sock.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _exchange(self, request: bytes) -> bytes:
        assert self._sock is not None
        try:
            try:
                self._sock.sendall(_HEADER.pack(len(request)) + request)
                first = self._sock.recv(1)
            except (BrokenPipeError, ConnectionResetError) as exc:
                raise _ClosedBeforeReply(
                    f"rewarm: sidecar at {self.path}: {exc}", code="UNAVAILABLE"
                ) from exc
            if not first:
                raise _ClosedBeforeReply(
                    f"rewarm: the sidecar at {self.path} closed the connection", code="UNAVAILABLE"
                )
            (n,) = _HEADER.unpack(first + self._recv_exact(3))
            if n > MAX_REPLY:
                # A length no rewarm reply has: the socket is not a rewarm
                # sidecar (or the stream is out of step). Never allocate it.
                raise TransportError(
                    f"rewarm: the server at {self.path} sent a {n}-byte length prefix (the limit is "
                    f"{MAX_REPLY}); it does not speak the rewarm protocol",
                    code="UNAVAILABLE",
                )
            return bytes(self._recv_exact(n))
        except (OSError, TransportError) as exc:
            self._drop()
            if isinstance(exc, TransportError):
                raise
            if isinstance(exc, TimeoutError):
                raise TransportError(
                    f"rewarm: the sidecar at {self.path} sent no reply within {self.timeout:g} s "
                    "(REWARM_REQUEST_TIMEOUT); it may be stopped, hung or overloaded",
                    code="UNAVAILABLE",
                ) from exc
            raise TransportError(f"rewarm: sidecar at {self.path}: {exc}", code="UNAVAILABLE") from exc

    def set_timeout(self, timeout: float | None) -> None:
        """The time a request may take from now on (this and later connections)."""
        with self._lock:
            self.timeout = timeout
            if self._sock is not None:
                self._sock.settimeout(timeout)

    def _drop(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def close(self) -> None:
        with self._lock:
            self._drop()
