from __future__ import annotations

import contextlib
import itertools
import math
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import rewarm
from rewarm._proto import rewarm_pb2 as pb
from tests.reference import cosine_ref

SPEC = {"kind": "cosine", "peak_lr": 1.0, "min_lr": 0.1, "warmup_steps": 10, "total_steps": 110}


def test_hello_reports_server_and_kinds(client: rewarm.Client) -> None:
    assert "cosine" in client.schedule_kinds
    assert client.server.startswith("rewarm")


def test_open_and_get_lr_window(client: rewarm.Client) -> None:
    info = client.open_session(SPEC)
    assert info.schedule == {**SPEC, "warmup_start_lr": 0}
    vals = client.get_lr(info.session_id, 3, count=150, multipliers=[1.0, 0.5])
    assert len(vals) == 300
    for i in range(150):
        want = cosine_ref(3 + i, 1.0, 110, 10, 0.1)
        assert math.isclose(vals[2 * i], want, rel_tol=1e-12, abs_tol=1e-15)
        assert math.isclose(vals[2 * i + 1], 0.5 * want, rel_tol=1e-12, abs_tol=1e-15)


@pytest.mark.parametrize(
    ("spec", "field", "text"),
    [
        ({**SPEC, "warmup_steps": 200}, "warmup_steps", "200"),
        ({**SPEC, "min_lr": float("nan")}, "min_lr", "NaN"),
        ({**SPEC, "peak_lr": -1.0}, "peak_lr", "-1"),
        ({**SPEC, "warmup": 3}, "warmup", "unknown field"),
        ({"kind": "cosinus"}, "kind", "cosinus"),
        ({**SPEC, "min_lr": 5.0}, "min_lr", "5"),
        ({**SPEC, "peak_lr": object()}, "peak_lr", "cannot be sent"),
        ({**SPEC, "stages": [{"steps": {1, 2}}]}, "stages[0].steps", "a set cannot be sent"),
    ],
)
def test_bad_specs_name_field_and_value(client: rewarm.Client, spec: dict, field: str, text: str) -> None:
    with pytest.raises(rewarm.SpecError) as ei:
        client.open_session(spec)
    assert ei.value.field == field
    assert field in str(ei.value) and text in str(ei.value)


def test_unknown_session_and_bad_step(client: rewarm.Client) -> None:
    with pytest.raises(rewarm.SessionNotFound):
        client.get_lr(10**9, 0)
    info = client.open_session(SPEC)
    with pytest.raises(rewarm.SpecError, match="step"):
        client.get_lr(info.session_id, -1)


def test_state_blob_round_trip(client: rewarm.Client) -> None:
    info = client.open_session(SPEC)
    blob = client.get_state(info.session_id, 42)
    restored = client.restore_state(blob)
    assert restored.step == 42 and restored.schedule == info.schedule
    assert client.get_lr(restored.session_id, 42, 70) == client.get_lr(info.session_id, 42, 70)
    broken = bytearray(blob)
    broken[len(broken) // 2] ^= 0x40
    with pytest.raises(rewarm.SpecError, match=r"checksum|not a rewarm state blob"):
        client.restore_state(bytes(broken))


def test_protocol_mismatch_names_both_versions(sidecar: rewarm.Sidecar) -> None:
    s = socket.socket(socket.AF_UNIX)
    s.connect(sidecar.path)
    body = pb.Request(id=1, hello=pb.Hello(protocol_version=999, client="future/1")).SerializeToString()
    s.sendall(struct.pack(">I", len(body)) + body)
    (n,) = struct.unpack(">I", s.recv(4, socket.MSG_WAITALL))
    resp = pb.Response.FromString(s.recv(n, socket.MSG_WAITALL))
    s.close()
    assert resp.error.code == pb.ERROR_CODE_PROTOCOL_MISMATCH
    assert "999" in resp.error.message and f"speaks {rewarm.PROTOCOL_VERSION}" in resp.error.message


def test_connect_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="backend"):
        rewarm.connect("grpc")  # type: ignore[arg-type]
    monkeypatch.delenv("REWARM_SOCKET", raising=False)
    with pytest.raises(ValueError, match="REWARM_SOCKET"):
        rewarm.connect("socket")
    with pytest.raises(rewarm.TransportError, match="rewarm serve"):
        rewarm.connect("socket", socket_path="/nonexistent/rewarm.sock")
    assert rewarm.connect("auto").kind == "inprocess"


def test_auto_uses_socket_when_env_set(monkeypatch: pytest.MonkeyPatch, sidecar: rewarm.Sidecar) -> None:
    monkeypatch.setenv("REWARM_SOCKET", sidecar.path)
    assert rewarm.connect("auto").kind == "socket"


def test_rewarm_failover_env_reaches_clients_that_wrap_opens(
    monkeypatch: pytest.MonkeyPatch, sidecar: rewarm.Sidecar
) -> None:
    from rewarm._failover import FailoverTransport
    from rewarm._transport import SocketTransport

    monkeypatch.setenv("REWARM_SOCKET", sidecar.path)
    monkeypatch.delenv("REWARM_FAILOVER", raising=False)
    assert isinstance(rewarm.connect().transport, FailoverTransport)
    monkeypatch.setenv("REWARM_FAILOVER", "0")
    assert type(rewarm.connect().transport) is SocketTransport
    opt = rewarm.wrap(
        torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), {"kind": "constant", "peak_lr": 1}
    )
    assert type(opt._client.transport) is SocketTransport
    assert isinstance(rewarm.connect(failover=True).transport, FailoverTransport)  # the argument wins
    monkeypatch.setenv("REWARM_FAILOVER", "maybe")
    with pytest.raises(ValueError, match="REWARM_FAILOVER='maybe'"):
        rewarm.connect()


def test_oversized_request_is_refused_alike_on_both_transports(client: rewarm.Client) -> None:
    # Over the 16 MiB request limit: the sidecar reads the body away and
    # answers, and the in-process dispatcher applies the same limit.
    spec = {"sources": [{"name": "a", "size": 10}], "global_batch_size": 2, "pad": "x" * (17 << 20)}
    same = r"frame too large: \d+ bytes, the limit is 16777216$"  # word for word on both
    with pytest.raises(rewarm.ProtocolError, match=same) as ei:
        client.open_sampler(spec)
    assert ei.value.code == "FRAME_TOO_LARGE"
    sid = client.open_session({"kind": "constant", "peak_lr": 0.5}).session_id
    assert client.get_lr(sid, 0) == [0.5]  # the connection is still good


def test_numpy_and_tensor_scalars_are_numbers(client: rewarm.Client) -> None:
    import numpy as np
    import torch

    plain = client.open_session({"kind": "cosine", "peak_lr": 1e-3, "total_steps": 200, "warmup_steps": 10})
    spec = {"kind": "cosine", "peak_lr": np.float64(1e-3), "total_steps": np.int64(200)}
    wrapped = client.open_session({**spec, "warmup_steps": torch.tensor(10)})
    assert client.get_lr(wrapped.session_id, 0, count=50) == client.get_lr(plain.session_id, 0, count=50)
    stages = [{"steps": 5, "mixture": {"a": np.float32(1.0)}}]
    spec = {
        "sources": [{"name": "a", "size": np.int64(200)}],
        "global_batch_size": np.int32(4),
        "stages": stages,
    }
    info = client.open_sampler(spec)
    assert info.source_sizes == [200] and info.global_batch_size == 4


def test_protobuf_struct_specs_with_lists(client: rewarm.Client) -> None:
    # docs/schedules.md: a spec can be a protobuf Struct; its lists are ListValues.
    from google.protobuf import struct_pb2

    spec = {"kind": "multistep", "peak_lr": 1.0, "milestones": [2, 4], "gamma": 0.5}
    st = struct_pb2.Struct()
    st.update(spec)
    a, b = client.open_session(st), client.open_session(spec)
    assert (
        client.get_lr(a.session_id, 0, count=6)
        == client.get_lr(b.session_id, 0, count=6)
        == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    )
    with pytest.raises(rewarm.SpecError, match='field "milestones" = b'):
        client.open_session({**spec, "milestones": b"\x02\x04"})


def test_failover_replays_reports_made_since_the_last_state(tmp_path) -> None:
    # Reports and re-plans are logged and folded into the state blob now and
    # then; a sidecar killed between two folds must still hand over all of them.
    spec = {"kind": "plateau", "peak_lr": 1.0, "patience": 5, "factor": 0.9}
    ref = rewarm.connect("inprocess")
    rid = ref.open_session(spec).session_id
    sidecar = rewarm.Sidecar(str(tmp_path / "s.sock"))
    client = rewarm.connect("socket", socket_path=sidecar.path)
    try:
        sid = client.open_session(spec).session_id
        for n in range(150):  # 131 fold into the blob, then 19 and the anneal wait in the log
            metric = 1.0 if n % 7 else 0.5 ** (n // 7)
            for c, i in ((ref, rid), (client, sid)):
                c.report(i, n, metric)
        for c, i in ((ref, rid), (client, sid)):
            c.replan(i, 200, "anneal", steps=100, shape="linear")
    finally:
        sidecar.proc.kill()
        sidecar.proc.wait()
    got = client.get_lr(sid, 0, count=320)
    assert got == ref.get_lr(rid, 0, count=320)
    # The reports did reach the plan: without them a plateau holds peak_lr
    # until the anneal.
    assert min(got[:200]) < 1.0
    assert client.transport.failovers >= 1


def test_failover_client_names_both_versions_on_mismatch(
    sidecar: rewarm.Sidecar, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The default (failover) client too, not only the bare socket one.
    from rewarm import _failover

    monkeypatch.setattr(
        _failover,
        "hello_bytes",
        lambda client: pb.Request(
            id=0, hello=pb.Hello(protocol_version=999, client=client)
        ).SerializeToString(),
    )
    with pytest.raises(
        rewarm.ProtocolError, match=rf"refused the handshake: .*999.*speaks {rewarm.PROTOCOL_VERSION}"
    ):
        rewarm.connect("socket", socket_path=sidecar.path)


def test_a_server_that_is_not_a_sidecar_is_named_not_read(tmp_path) -> None:
    # A Unix socket that answers with text: its first bytes read as a huge
    # length, which must not be allocated.
    def answer(c: socket.socket) -> None:
        c.recv(4096)
        c.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        c.recv(1)  # until the client closes

    path = str(tmp_path / "http.sock")
    t = _serve_once(path, answer)
    with pytest.raises(rewarm.TransportError, match="does not speak the rewarm protocol"):
        rewarm.connect("socket", socket_path=path, failover=False)
    t.join(10)


def _serve_once(path: str, answer: Callable[[socket.socket], None]) -> threading.Thread:
    """A Unix socket at path whose first connection answer() serves (an
    OSError there is the client going away); later connects are refused."""
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(1)

    def run() -> None:
        c, _ = srv.accept()
        with contextlib.suppress(OSError):
            answer(c)
        c.close()
        srv.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_spawn_checks_what_the_spawned_sidecar_would_refuse(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rewarm._launch import connect_or_spawn

    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("REWARM_SIDECAR_IDLE_EXIT", "300")
    with pytest.raises(ValueError, match=r"REWARM_SIDECAR_IDLE_EXIT='300': expected a duration with a unit"):
        connect_or_spawn(str(tmp_path / "a.sock"))
    monkeypatch.setenv("REWARM_SIDECAR_IDLE_EXIT", "1m30s")
    monkeypatch.setenv("REWARM_SIDECAR_IDLE_EXIT", "2562048h")  # past Go's int64 nanoseconds
    with pytest.raises(ValueError, match=r"'2562048h': too long: a duration is at most about 292 years"):
        connect_or_spawn(str(tmp_path / "a.sock"))
    monkeypatch.setenv("REWARM_SIDECAR_IDLE_EXIT", "1m30s")
    not_a_socket = tmp_path / "b.sock"
    not_a_socket.write_text("x")
    with pytest.raises(FileExistsError, match="exists and is not a socket"):
        connect_or_spawn(str(not_a_socket))


def test_idle_exit_durations_are_judged_as_go_parses_them() -> None:
    from rewarm._launch import _duration_error

    # What Go's time.ParseDuration says of each (checked with Go 1.26).
    go_accepts = {
        "2562047h": True,
        "2562048h": False,
        "2562047h47m16.854775807s": True,
        "2562047h47m16.854775808s": False,
        "9223372036854775807ns": True,
        "9223372036854775808ns": False,
        "0": True,
        "1.5h": True,
        ".5s": True,
        "5.s": True,
        "300": False,
        "5 m": False,
    }
    assert {d: _duration_error(d) is None for d in go_accepts} == go_accepts


def test_the_spawn_lock_excludes_and_leaves_no_file(tmp_path) -> None:
    from rewarm._launch import _spawn_lock

    lock = str(tmp_path / "s.sock.lock")
    inside, overlaps, entered = [0], [0], [0]
    guard = threading.Lock()

    def churn() -> None:
        for _ in range(200):
            with _spawn_lock(lock):
                with guard:
                    inside[0] += 1
                    overlaps[0] += inside[0] > 1
                    entered[0] += 1
                time.sleep(0)
                with guard:
                    inside[0] -= 1

    threads = [threading.Thread(target=churn) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert entered[0] == 800 and overlaps[0] == 0
    assert not os.path.exists(lock)


def test_a_request_meeting_the_idle_close_is_sent_again(tmp_path) -> None:
    # With --conn-idle-timeout, a request sent just as the server closes the
    # idle connection is retried once on a new connection, never failed.
    with rewarm.Sidecar(str(tmp_path / "idle.sock"), "--conn-idle-timeout", "50ms") as sc:
        c = rewarm.connect("socket", socket_path=sc.path, failover=False)
        sid = c.open_session(SPEC).session_id
        want = c.get_lr(sid, 0, 5)
        connects = 0
        plain = c.transport._connect

        def counted() -> None:
            nonlocal connects
            connects += 1
            plain()

        c.transport._connect = counted
        for i in range(120):
            time.sleep(0.047 + 0.0001 * (i % 60))  # sweeps across the 50 ms deadline
            assert c.get_lr(sid, 0, 5) == want
        assert connects > 0, "the server never closed the idle connection: nothing was retried"
        c.close()


def test_failover_says_why_the_socket_cannot_connect(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import logging

    monkeypatch.setenv("REWARM_SOCKET", "/tmp/" + "x" * 120 + ".sock")  # too long for a Unix socket
    with caplog.at_level(logging.WARNING, logger="rewarm"):
        c = rewarm.connect("auto")
        c.close()
    assert "AF_UNIX path too long" in caplog.text


def test_a_stopped_sidecar_costs_one_request_timeout(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A sidecar that is alive but answers nothing (SIGSTOP, a hung host):
    # REWARM_REQUEST_TIMEOUT bounds the wait. Without failover the error
    # says what happened; with it the run goes on in-process, bit-identical.
    import signal

    monkeypatch.setenv("REWARM_REQUEST_TIMEOUT", "0.5")
    ref = rewarm.connect("inprocess")
    rid = ref.open_session(SPEC).session_id
    sidecar = rewarm.Sidecar(str(tmp_path / "s.sock"))
    plain = rewarm.connect("socket", socket_path=sidecar.path, failover=False)
    robust = rewarm.connect("socket", socket_path=sidecar.path)
    try:
        pid, fid = plain.open_session(SPEC).session_id, robust.open_session(SPEC).session_id
        sidecar.proc.send_signal(signal.SIGSTOP)
        _wait_stopped(sidecar.proc.pid)
        try:
            with pytest.raises(rewarm.TransportError, match=r"no reply within 0.5 s \(REWARM_REQUEST"):
                plain.get_lr(pid, 0, count=8)
            assert robust.get_lr(fid, 0, count=120) == ref.get_lr(rid, 0, count=120)
            assert robust.transport.failovers == 1
        finally:
            sidecar.proc.send_signal(signal.SIGCONT)
    finally:
        plain.close()
        robust.close()
        sidecar.stop()


def _wait_stopped(pid: int) -> None:
    """Until the kernel reports pid stopped: a stop lands once one of its
    threads takes the signal, and until then the others may still answer.
    The deadline is a watchdog against a hang, not a speed check."""
    stat = Path(f"/proc/{pid}/stat")
    deadline = time.monotonic() + 60
    while stat.read_text().rsplit(")", 1)[1].split()[0] != "T":
        assert time.monotonic() < deadline, "the sidecar did not stop"
        time.sleep(0.001)


@pytest.mark.parametrize("failover", [False, True])
def test_a_child_forked_mid_request_does_not_wait_on_the_parents_lock(tmp_path, failover: bool) -> None:
    # Another thread is inside a request (the sidecar is stopped, so it
    # stays there) when the process forks, as a DataLoader worker does: the
    # child inherits the client's lock held, by a thread it does not have.
    import signal

    sidecar = rewarm.Sidecar(str(tmp_path / "s.sock"))
    client = rewarm.connect("socket", socket_path=sidecar.path, failover=failover)
    try:
        sid = client.open_session(SPEC).session_id
        want = client.get_lr(sid, 0, count=4)
        sidecar.proc.send_signal(signal.SIGSTOP)
        _wait_stopped(sidecar.proc.pid)
        inflight = threading.Thread(target=lambda: client.get_lr(sid, 0, count=4), daemon=True)
        inflight.start()
        socket_side = client.transport._socket if failover else client.transport
        deadline = time.monotonic() + 60
        while not socket_side._lock.locked():  # until the thread is inside its request
            assert time.monotonic() < deadline, "the request never started"
            time.sleep(0.001)
        pid = os.fork()
        if pid == 0:  # the child: 20 s to get its answer, or SIGALRM ends it
            signal.alarm(20)
            try:
                os._exit(0 if client.get_lr(sid, 0, count=4) == want else 3)
            except BaseException:
                os._exit(4)
        time.sleep(0.5)
        sidecar.proc.send_signal(signal.SIGCONT)  # the child's request waits for it too
        _, status = os.waitpid(pid, 0)
        inflight.join(10)
        assert os.waitstatus_to_exitcode(status) == 0, "the child hung (-14) or failed"
    finally:
        sidecar.proc.send_signal(signal.SIGCONT)
        client.close()
        sidecar.stop()


def test_a_failover_client_shared_by_threads_keeps_each_session(tmp_path, monkeypatch) -> None:
    # Thread B recreates its session in-process after a sidecar kill while
    # thread A reconnects to the restarted sidecar: B's session must not be
    # recorded under the new connection with its in-process id (which there
    # names another session).
    import signal

    def cosine(peak: float) -> dict:
        return {"kind": "cosine", "peak_lr": peak, "total_steps": 100}

    path = str(tmp_path / "s.sock")
    sidecar = rewarm.Sidecar(path)
    client = rewarm.connect("socket", socket_path=path)
    tr = client.transport
    try:
        a, b, c = (client.open_session(cosine(p)).session_id for p in (0.001, 0.5, 7.0))
        want_b = client.get_lr(b, 0, count=1)
        sidecar.proc.send_signal(signal.SIGKILL)
        sidecar.proc.wait()
        client.get_lr(a, 0, count=1)  # fails over: a now lives in-process
        sidecar = rewarm.Sidecar(path)
        tr._retry_at = time.monotonic() + 100  # B's request stays in-process
        inproc = tr._inproc
        slow_once = threading.Event()

        def slow(req: bytes, plain=inproc.roundtrip) -> bytes:
            out = plain(req)
            if not slow_once.is_set():
                slow_once.set()
                time.sleep(0.3)  # B is placing its session, without the GIL
            return out

        monkeypatch.setattr(inproc, "roundtrip", slow)
        tb = threading.Thread(target=lambda: client.get_lr(b, 0, count=1))
        tb.start()
        slow_once.wait(5)
        tr._retry_at = 0.0  # the backoff is over: A reconnects now
        client.get_lr(a, 0, count=1)
        client.get_lr(c, 0, count=1)
        tb.join(10)
        assert tr.on_socket
        assert client.get_lr(b, 0, count=1) == want_b
    finally:
        client.close()
        sidecar.stop()


@pytest.mark.parametrize("failover", [False, True])
def test_an_undecodable_reply_is_a_protocol_error(tmp_path, failover: bool) -> None:
    # A server that frames its replies but answers anything but hello with no
    # rewarm message: the plain client names it (code MALFORMED) rather than
    # leak protobuf's DecodeError; the failover client goes on in-process
    # (later connects are refused).
    def answer(c: socket.socket) -> None:
        while True:
            (n,) = struct.unpack(">I", c.recv(4))
            req = b""
            while len(req) < n:
                req += c.recv(n - len(req))
            msg = pb.Request.FromString(req)
            hello = pb.HelloReply(protocol_version=rewarm.PROTOCOL_VERSION, server="odd")
            ok = pb.Response(id=msg.id, hello=hello).SerializeToString()
            garbage = b"\x0a\xff"  # a field longer than the message
            reply = ok if msg.WhichOneof("body") == "hello" else garbage
            c.sendall(struct.pack(">I", len(reply)) + reply)
            if reply != ok:
                break
        c.recv(1)

    path = str(tmp_path / "odd.sock")
    t = _serve_once(path, answer)
    client = rewarm.connect("socket", socket_path=path, failover=failover)
    if failover:
        sid = client.open_session(SPEC).session_id
        assert client.get_lr(sid, 0, count=20) == [cosine_ref(n, 1.0, 110, 10, 0.1) for n in range(20)]
        assert client.transport.failovers == 1 and not client.transport.on_socket
    else:
        with pytest.raises(rewarm.ProtocolError, match="is not a rewarm message") as refused:
            client.open_session(SPEC)
        assert refused.value.code == "MALFORMED"
    client.close()
    t.join(10)


def test_in_process_buffers_do_not_keep_a_large_call() -> None:
    # A 2 MB request (200 000 norms) and its 2 MB state get buffers of their
    # own: kept, they would stay allocated for as long as the client lives.
    keep = 1 << 20  # rewarm._transport.KEEP_BUFFER
    c = rewarm.connect("inprocess")
    spec = {"kind": "refined", "peak_lr": 1.0, "grad_norms": [1.0, 2.0] * 100_000}
    sid = c.open_session(spec).session_id
    blob = c.get_state(sid, 10)
    assert len(blob) > keep
    again = c.restore_state(blob)
    assert c.get_lr(again.session_id, 10, count=1000) == c.get_lr(sid, 10, count=1000)
    assert len(c.transport._in) <= keep and len(c.transport._out) <= keep
    # A request that fits in 1 MiB is served from a kept buffer: growing from
    # 770 KB (70 000 norms) to 880 KB takes 1 MiB, not 1.5 MB that would be
    # dropped after every such call.
    for n in (70_000, 80_000):
        c.open_session({**spec, "grad_norms": [1.0, 2.0] * (n // 2)})
    assert len(c.transport._in) == keep
    c.close()


@pytest.mark.parametrize("raw", ["soon", "0", "-1", "inf", "nan"])
def test_request_timeout_setting_is_checked(raw: str, monkeypatch: pytest.MonkeyPatch, sidecar) -> None:
    monkeypatch.setenv("REWARM_REQUEST_TIMEOUT", raw)
    with pytest.raises(ValueError, match=rf"REWARM_REQUEST_TIMEOUT='{raw}': expected a positive number"):
        rewarm.connect("socket", socket_path=sidecar.path, failover=False)


def test_a_sidecar_left_running_stops_when_the_script_dies(tmp_path) -> None:
    import subprocess
    import sys

    script = (
        "import rewarm\n"
        f"sc = rewarm.Sidecar({str(tmp_path / 's.sock')!r})\n"
        "print(sc.proc.pid, flush=True)\n"
        "raise RuntimeError('the script dies without stopping it')\n"
    )
    r = subprocess.run([sys.executable, "-P", "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "the script dies" in r.stderr
    pid = int(r.stdout)
    deadline = time.monotonic() + 60  # a watchdog: it exits at once
    while os.path.exists(f"/proc/{pid}") and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z":
        assert time.monotonic() < deadline, f"the sidecar {pid} outlived its script"
        time.sleep(0.05)
    assert not (tmp_path / "s.sock").exists()


def test_loading_the_extension_leaves_the_working_directory_alone(tmp_path) -> None:
    # The working directory is the whole process's: a thread opening a relative
    # path while the Go extension loads must not land in rewarm/_native.
    import subprocess
    import sys

    script = (
        "import os, rewarm\n"
        "calls, chdir = [], os.chdir\n"
        "os.chdir = lambda p: (calls.append(str(p)), chdir(p))[1]\n"
        "rewarm.connect('inprocess').close()\n"
        "print(repr(calls), os.getcwd())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "REWARM_SOCKET"}
    cmd = [sys.executable, "-P", "-c", script]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["[]", str(tmp_path)]


def test_reconnect_attempts_on_a_frozen_sidecar_back_off(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A frozen sidecar accepts connections (the kernel queues them) but never
    # answers: each reconnect attempt waits for a hello on the training
    # thread, so after one goes unanswered the attempts come 10 s, then
    # doubling to 60 s, apart. A listening socket that never accepts stands in.
    import socket

    from rewarm import _failover

    path = str(tmp_path / "frozen.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    monkeypatch.setenv("REWARM_REQUEST_TIMEOUT", "0.05")
    now = [1000.0]
    monkeypatch.setattr(_failover.time, "monotonic", lambda: now[0])
    tries: list[float] = []
    real = _failover.SocketTransport

    def counted(*args, **kwargs):
        tries.append(now[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(_failover, "SocketTransport", counted)
    t = _failover.FailoverTransport(path, None, _failover.hello_bytes("test"))
    try:
        while now[0] < 1200:
            t._side()  # the in-process side answers meanwhile
            now[0] += 1.0
        assert not t.on_socket
        assert [b - a for a, b in itertools.pairwise(tries)] == [10.0, 20.0, 40.0, 60.0, 60.0]
    finally:
        t.close()
        listener.close()


def test_a_forked_childs_threads_share_one_fork_safe_lock() -> None:
    # In a forked child, two threads that take the lock at once must still
    # exclude each other: the lock the child replaces is replaced once, not
    # by each thread that finds it stale. The child's threads are made to
    # take it together (a barrier in any lock made after the fork).
    import contextlib
    import signal
    import types

    from rewarm import _transport

    lock = _transport.ForkSafeLock()
    with lock:  # used in the parent first, as a client is
        pass
    pid = os.fork()
    if pid == 0:
        signal.alarm(20)
        try:
            real = threading.Lock
            together = threading.Barrier(2, timeout=2)

            def made_together() -> threading.Lock:
                with contextlib.suppress(threading.BrokenBarrierError):
                    together.wait()
                return real()

            # only the module's own name for threading: Barrier and Thread make locks too
            _transport.threading = types.SimpleNamespace(Lock=made_together)  # type: ignore[assignment]
            inside, most, errors = [0], [0], []
            both = threading.Barrier(2, timeout=5)

            def use() -> None:
                try:
                    both.wait()
                    with lock:
                        inside[0] += 1
                        most[0] = max(most[0], inside[0])
                        time.sleep(0.2)
                        inside[0] -= 1
                except BaseException as exc:
                    errors.append(exc)

            threads = [threading.Thread(target=use) for _ in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            os._exit(0 if most[0] == 1 and not errors else 3)
        except BaseException:
            os._exit(4)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    assert code == 0, f"exit {code}: two threads of the child held the lock at once (3), or it failed (4)"


def test_a_live_clients_reaped_objects_are_recreated(tmp_path) -> None:
    # A connection idle past --conn-idle-timeout is closed and its objects
    # orphaned; past --orphan-ttl the sidecar reaps them. The client still
    # holds each one's spec (and a session's re-plans), so its next request
    # recreates the object and carries on bit-identically, as after a
    # sidecar restart; it raised SessionNotFound.
    spec = {
        "sources": [{"name": "a", "size": 100}, {"name": "b", "size": 50}],
        "global_batch_size": 8,
        "seed": 3,
        "stages": [{"steps": 20, "mixture": {"a": 0.75, "b": 0.25}}],
    }
    path = str(tmp_path / "reap.sock")
    with rewarm.Sidecar(path, "--conn-idle-timeout", "100ms", "--orphan-ttl", "100ms") as sc:
        c = rewarm.connect("socket", socket_path=sc.path)
        sid = c.open_session(SPEC).session_id
        c.replan(sid, 20, "anneal", steps=10)
        smp = c.open_sampler(spec).sampler_id
        lrs, ids = c.get_lr(sid, 15, 20), c.get_batches(smp, 3, 4)
        time.sleep(0.5)  # closed as idle, then orphaned past the TTL
        other = rewarm.connect("socket", socket_path=sc.path, failover=False)
        other.open_session(SPEC)  # an open reaps expired orphans
        assert len(other.status().sessions) == 1  # only other's: c's were reaped
        assert c.get_lr(sid, 15, 20) == lrs  # the anneal is replayed too
        assert c.get_batches(smp, 3, 4) == ids
        # A poll recreates the session too (the sidecar ignored an unknown id,
        # so the job was invisible to `rewarm ctl` until its next fetch), and
        # closing a reaped object closes it (it raised and kept the entry).
        sid2 = c.open_session({**SPEC, "total_steps": 120}, name="job").session_id
        smp2 = c.open_sampler(spec).sampler_id
        time.sleep(0.5)
        other.open_session(SPEC)  # reaps c's orphans again
        c.poll_controls(0, sid2, 7)
        assert "job" in {s.name for s in other.status().sessions}
        time.sleep(0.5)
        other.open_session(SPEC)
        c.close_session(smp2)
        c.close_session(sid2)
        assert not {sid2, smp2} & set(c.transport._objs)
        c.close()
        other.close()


def test_a_recreation_the_sidecar_refuses_is_its_error_not_an_outage(tmp_path) -> None:
    # Recreating a reaped session on a sidecar at its session limit failed
    # over to in-process, swallowing RESOURCE_EXHAUSTED: the sidecar's own
    # refusal is what the caller gets, and the client stays on the socket.
    path = str(tmp_path / "full.sock")
    with rewarm.Sidecar(path, "--conn-idle-timeout", "100ms", "--orphan-ttl", "100ms") as sc:
        c = rewarm.connect("socket", socket_path=sc.path)
        sid = c.open_session(SPEC).session_id
        time.sleep(0.5)
        other = rewarm.connect("socket", socket_path=sc.path, failover=False)
        other.open_session(SPEC)  # reaps c's session
        t = c.transport
        raw = t._raw

        def full(side, req):  # type: ignore[no-untyped-def]
            if req.WhichOneof("body") == "restore_state":  # as a sidecar at its limit answers
                err = pb.Error(code=pb.ERROR_CODE_RESOURCE_EXHAUSTED, message="too many open sessions")
                return pb.Response(id=req.id, error=err)
            return raw(side, req)

        t._raw = full
        with pytest.raises(rewarm.RewarmError, match="too many open sessions") as refused:
            c.get_lr(sid, 0, 3)
        assert refused.value.code == "RESOURCE_EXHAUSTED"
        assert t._side() is t._socket
        t._raw = raw
        assert c.get_lr(sid, 0, 3) == [cosine_ref(n, 1.0, 110, 10, 0.1) for n in range(3)]
        c.close()
        other.close()
