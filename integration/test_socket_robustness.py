"""(f) Malformed, oversized and unknown requests get an error response or a
clean close, while another client keeps being served; and the sidecar's
lifecycle: READY line, 0600 socket, clean exit on SIGTERM/SIGINT."""

from __future__ import annotations

import os
import signal
import socket
import stat
import struct
import subprocess
import time
from pathlib import Path

import pytest

import rewarm
from rewarm._proto import rewarm_pb2 as pb
from tests.reference import cosine_ref

SPEC = {"kind": "cosine", "peak_lr": 1.0, "total_steps": 100}


def raw(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    return s


def read_response(s: socket.socket) -> pb.Response | None:
    """The next response, or None when the server closed the connection."""
    hdr = s.recv(4, socket.MSG_WAITALL)
    if len(hdr) == 0:
        return None
    (n,) = struct.unpack(">I", hdr)
    return pb.Response.FromString(s.recv(n, socket.MSG_WAITALL))


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def test_bad_input_does_not_disturb_other_clients(sidecar: rewarm.Sidecar) -> None:
    good = rewarm.connect("socket", socket_path=sidecar.path)
    sid = good.open_session(SPEC).session_id

    def still_served() -> None:
        want = [cosine_ref(n, 1.0, 100) for n in range(3)]
        assert good.get_lr(sid, 0, 3) == pytest.approx(want, rel=1e-12)

    s = raw(sidecar.path)
    s.sendall(frame(b"\xff\xfe\xfd\xfc garbage"))
    r = read_response(s)
    assert r is not None and r.error.code == pb.ERROR_CODE_MALFORMED
    still_served()

    # The same connection is still usable after a malformed frame.
    s.sendall(
        frame(pb.Request(id=4, hello=pb.Hello(protocol_version=rewarm.PROTOCOL_VERSION)).SerializeToString())
    )
    r = read_response(s)
    assert r is not None and r.id == 4 and r.WhichOneof("body") == "hello"

    # Unknown request type: field 50 of Request is not defined.
    s.sendall(frame(b"\x08\x07" + b"\x92\x03\x00"))
    r = read_response(s)
    assert r is not None and r.id == 7 and r.error.code == pb.ERROR_CODE_UNIMPLEMENTED
    still_served()

    # Requests before the handshake are refused with a typed error.
    t = raw(sidecar.path)
    t.sendall(frame(pb.Request(id=1, close_session=pb.CloseSession(session_id=sid)).SerializeToString()))
    r = read_response(t)
    assert r is not None and r.error.code == pb.ERROR_CODE_HANDSHAKE_REQUIRED
    still_served()

    # Oversized frame: an error response, then a clean close.
    big = raw(sidecar.path)
    big.sendall(struct.pack(">I", 1 << 31))
    r = read_response(big)
    assert r is not None and r.error.code == pb.ERROR_CODE_FRAME_TOO_LARGE
    assert read_response(big) is None
    still_served()

    # A client that vanishes mid-frame.
    gone = raw(sidecar.path)
    gone.sendall(struct.pack(">I", 50) + b"abc")
    gone.close()
    still_served()
    for c in (s, t, big):
        c.close()
    good.close()


def test_lifecycle_ready_mode_and_signals(tmp_path: Path) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        path = tmp_path / f"s{int(sig)}.sock"
        proc = subprocess.Popen(
            [rewarm.find_binary(), "serve", "--socket", str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line == f"READY {path}"
        mode = os.stat(path).st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
        c = rewarm.connect("socket", socket_path=path)
        c.open_session(SPEC)
        proc.send_signal(sig)
        assert proc.wait(10) == 0
        assert not path.exists()


def test_second_server_on_same_socket_refused(sidecar: rewarm.Sidecar) -> None:
    proc = subprocess.run(
        [rewarm.find_binary(), "serve", "--socket", sidecar.path], capture_output=True, text=True, timeout=10
    )
    assert proc.returncode != 0 and "already listening" in proc.stderr
    # And the first one still serves.
    rewarm.connect("socket", socket_path=sidecar.path).open_session(SPEC)


def test_cli_help_and_version() -> None:
    out = subprocess.run([rewarm.find_binary(), "--help"], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0 and "rewarm serve" in out.stdout and "cosine" in out.stdout
    out = subprocess.run([rewarm.find_binary(), "version"], capture_output=True, text=True, timeout=10)
    assert out.stdout.startswith(f"rewarm {rewarm.__version__} (protocol {rewarm.PROTOCOL_VERSION})")
    out = subprocess.run([rewarm.find_binary(), "serve"], capture_output=True, text=True, timeout=10)
    assert out.returncode == 2 and "--socket" in out.stderr


def test_sidecar_restarts_on_stale_socket(tmp_path: Path) -> None:
    path = tmp_path / "k.sock"
    first = subprocess.Popen(
        [rewarm.find_binary(), "serve", "--socket", str(path)], stdout=subprocess.PIPE, text=True
    )
    assert first.stdout is not None and first.stdout.readline().startswith("READY")
    first.kill()  # SIGKILL leaves the socket file behind
    first.wait()
    assert path.exists()
    time.sleep(0.05)
    with rewarm.Sidecar(path) as sc:
        rewarm.connect("socket", socket_path=sc.path).open_session(SPEC)


def test_client_past_1024_descriptors_keeps_its_connection(sidecar: rewarm.Sidecar) -> None:
    # Training processes hold many files; the idle-close check before each
    # request must work on any descriptor (select() refuses those past 1024).
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 1200
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(need, soft), hard), hard))
    held = []
    try:
        while len(held) < 1100:
            held.append(os.open(os.devnull, os.O_RDONLY))
        client = rewarm.connect("socket", socket_path=sidecar.path, failover=False)
        sock = client.transport._sock
        assert sock is not None and sock.fileno() >= 1024
        sid = client.open_session({"kind": "constant", "peak_lr": 0.5}).session_id
        for _ in range(5):
            assert client.get_lr(sid, 0) == [0.5]
        assert client.transport._sock is sock  # no reconnect
        client.close()
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
