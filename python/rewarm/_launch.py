"""Without `rewarm launch`: local rank 0 connects to the node's sidecar or
spawns one, under a file lock; the other ranks wait for it."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from rewarm._errors import SpecError
from rewarm._sidecar import find_binary

MAX_SOCKET_PATH = 107


def default_socket_path(run_id: str | None = None) -> str:
    """The node's default socket: a 0700 directory under $XDG_RUNTIME_DIR (or
    a per-uid directory in the temp dir), namespaced by TORCHELASTIC_RUN_ID,
    within the 107-byte socket path limit. The same rule as the Go side."""
    run_id = run_id or os.environ.get("TORCHELASTIC_RUN_ID") or "default"
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    d = Path(xdg) / "rewarm" if xdg else Path(tempfile.gettempdir()) / f"rewarm-{os.getuid()}"
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = d.stat().st_mode & 0o777
    if mode & 0o077:
        raise PermissionError(f"{d} is accessible to other users (mode {mode:o}); it must be 0700")
    path = str(d / f"rewarm-{run_id}.sock")
    if len(path) > MAX_SOCKET_PATH:
        path = str(d / f"rw-{hashlib.sha256(run_id.encode()).hexdigest()[:16]}.sock")
    if len(path) > MAX_SOCKET_PATH:
        raise OSError(
            f"socket directory {d} is too long for a socket path; set XDG_RUNTIME_DIR or REWARM_SOCKET"
        )
    return path


# Go's time.ParseDuration syntax: one or more <number><unit>, or 0.
_GO_DURATION = re.compile(r"(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|ms|s|m|h))+|0")
_GO_TERM = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_NS = {"ns": 1, "us": 10**3, "µs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}


def _duration_error(text: str) -> str | None:
    """Why Go's time.ParseDuration would refuse text, or None: the syntax,
    or a total past int64 nanoseconds (about 292 years)."""
    if not _GO_DURATION.fullmatch(text):
        return "expected a duration with a unit, such as 120s, 5m or 1h30m"
    from fractions import Fraction

    total = sum(int(Fraction(n) * _NS[unit]) for n, unit in _GO_TERM.findall(text))
    if total > 2**63 - 1:
        return "too long: a duration is at most about 292 years (2562047h)"
    return None


def _alive(path: str) -> bool:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(1.0)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


@contextlib.contextmanager
def _spawn_lock(lock_path: str) -> Iterator[None]:
    """Hold an exclusive lock on the file at lock_path, and remove the file
    before letting go, so none are left behind. A waiter whose lock lands on a
    file already removed holds nothing, so it starts over on the current one."""
    while True:
        f = open(lock_path, "a")  # noqa: SIM115 (closed below, after the unlink)
        try:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                current = os.stat(lock_path)
            except FileNotFoundError:
                current = None
            if current is not None and os.path.samestat(os.fstat(f.fileno()), current):
                break
        except BaseException:
            f.close()
            raise
        f.close()
    try:
        yield
    finally:
        try:
            with contextlib.suppress(FileNotFoundError):  # removed by hand: the body's error matters more
                os.unlink(lock_path)
        finally:
            f.close()


def connect_or_spawn(path: str | None = None, idle_exit: str | None = None, timeout: float = 60.0) -> str:
    """Return the path of a live sidecar for this node. Local rank 0 starts
    one if none answers; it runs in its own session (so torchelastic's
    process-group kills on restart do not reach it) and exits after
    `idle_exit` without clients. Other local ranks wait for it."""
    path = path or default_socket_path()
    if idle_exit is None:
        idle_exit = os.environ.get("REWARM_SIDECAR_IDLE_EXIT") or "120s"
        what = f"REWARM_SIDECAR_IDLE_EXIT={idle_exit!r}"
    else:
        what = f"idle_exit={idle_exit!r}"
    # Checked here: the spawned sidecar's own message would not reach the user.
    why = _duration_error(idle_exit)
    if why is not None:
        raise SpecError(f"{what}: {why}")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    deadline = time.monotonic() + timeout
    if local_rank == 0:
        with _spawn_lock(path + ".lock"):
            if not _alive(path):
                if os.path.lexists(path) and not stat.S_ISSOCK(os.lstat(path).st_mode):
                    raise FileExistsError(
                        f"rewarm: {path} exists and is not a socket; remove it or set REWARM_SOCKET"
                    )
                proc = subprocess.Popen(
                    [find_binary(), "serve", "--socket", path, "--idle-exit", idle_exit],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    text=True,
                )
                assert proc.stdout is not None
                line = proc.stdout.readline()
                proc.stdout.close()
                if not line.startswith("READY"):
                    raise RuntimeError(
                        f"rewarm: the spawned sidecar did not start (exit code {proc.poll()}); run "
                        f"`rewarm serve --socket {path}` to see why"
                    )
    while not _alive(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"rewarm: no sidecar answered at {path} within {timeout:.0f} s")
        time.sleep(0.05)
    return path
