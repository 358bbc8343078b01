"""The sidecar in production: fault tolerance under torchrun, live control
with `rewarm ctl` (one node and two), `rewarm launch`, the connect-or-spawn
fallback, snapshots, metrics and the uid check."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

import rewarm
from rewarm._proto import rewarm_pb2 as pb

HERE = Path(__file__).resolve().parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def wait_for(pred, timeout: float = 120.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.01)


def progress(out: Path, rank: int = 0) -> int:
    try:
        return int((out / f"progress{rank}").read_text() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def torchrun(out: Path, *args: str, env: dict | None = None, nproc: int = 2) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={nproc}",
            str(HERE / "fault_job.py"),
            "--out",
            str(out),
            *args,
        ],
        env={**ENV, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(proc: subprocess.Popen, timeout: float = 300) -> None:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-4000:]


def ranks(out: Path, n: int = 2) -> list[dict]:
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(n)]


def test_sidecar_killed_and_restarted_mid_run(tmp_path: Path) -> None:
    ref, run = tmp_path / "ref", tmp_path / "run"
    ref.mkdir()
    run.mkdir()
    sock = str(tmp_path / "s.sock")
    with rewarm.Sidecar(sock):
        finish(torchrun(ref, env={"REWARM_SOCKET": sock}))
    first = rewarm.Sidecar(sock)
    job = torchrun(run, "--pace", "0.01", env={"REWARM_SOCKET": sock})
    wait_for(lambda: progress(run) >= 150, what="step 150")
    first.proc.send_signal(signal.SIGKILL)  # kill -9, mid-run
    first.proc.wait()
    wait_for(lambda: progress(run) >= 300, what="step 300")
    second = rewarm.Sidecar(sock)  # the stale socket file is replaced
    try:
        finish(job)
    finally:
        second.stop()
    want, got = ranks(ref), ranks(run)
    for r in range(2):
        assert got[r]["lrs"] == want[r]["lrs"], f"rank {r}: LR stream differs"
        assert got[r]["ids"] == want[r]["ids"], f"rank {r}: replay stream differs"
        assert got[r]["failovers"] >= 1 and got[r]["reconnects"] >= 1, got[r]


def ctl(sock: str, *args: str) -> str:
    out = subprocess.run(
        [rewarm.find_binary(), "ctl", "--socket", sock, *args], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_ctl_anneal_switches_both_ranks_at_the_same_step(tmp_path: Path) -> None:
    sock = str(tmp_path / "s.sock")
    with rewarm.Sidecar(sock):
        job = torchrun(tmp_path, "--pace", "0.01", "--poll", "--steps", "300", env={"REWARM_SOCKET": sock})
        wait_for(lambda: progress(tmp_path) >= 40, what="step 40")
        status = ctl(sock, "status")
        assert status.count('"job"') == 2 and "kind infinite" in status and "sampler" in status
        assert "queued control 1" in ctl(
            sock, "anneal", "--at-step", "200", "--steps", "50", "--shape", "linear"
        )
        bad = subprocess.run(
            [rewarm.find_binary(), "ctl", "--socket", sock, "anneal", "--steps", "5"],
            capture_output=True,
            text=True,
        )
        assert bad.returncode == 2 and "--at-step" in bad.stderr
        finish(job)
    r0, r1 = ranks(tmp_path)
    assert r0["lrs"] == r1["lrs"]
    lrs = r0["lrs"]
    assert lrs[199] == 0.01 and lrs[200] == 0.01  # const_lr until the anneal starts
    assert abs(lrs[225] - (0.01 + (0.001 - 0.01) * 0.5)) < 1e-12
    assert lrs[250] == 0.001 and lrs[299] == 0.001


def test_two_nodes_two_sidecars(tmp_path: Path) -> None:
    """Two simulated nodes on loopback, each with its own sidecar: a control
    posted to node 0's sidecar reaches node 1 through rank 0's broadcast."""
    s0, s1 = str(tmp_path / "n0.sock"), str(tmp_path / "n1.sock")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with rewarm.Sidecar(s0), rewarm.Sidecar(s1):
        nodes = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "torch.distributed.run",
                    "--nnodes=2",
                    f"--node_rank={n}",
                    "--nproc_per_node=1",
                    "--master_addr=127.0.0.1",
                    f"--master_port={port}",
                    str(HERE / "fault_job.py"),
                    "--out",
                    str(tmp_path),
                    "--pace",
                    "0.01",
                    "--poll",
                    "--steps",
                    "250",
                ],
                env={**ENV, "REWARM_SOCKET": sock},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for n, sock in enumerate((s0, s1))
        ]
        wait_for(lambda: progress(tmp_path) >= 30, what="step 30")
        ctl(s0, "anneal", "--at-step", "150", "--steps", "20", "--shape", "cosine", "--min-lr", "0.002")
        for p in nodes:
            finish(p)
        assert "0 controls posted" in ctl(s1, "status")  # node 1 heard of it only from rank 0
    r0, r1 = ranks(tmp_path)
    assert r0["lrs"] == r1["lrs"]
    assert r0["lrs"][149] == 0.01 and r0["lrs"][170] == 0.002


def test_launch_runs_torchrun_beside_a_sidecar(tmp_path: Path) -> None:
    sock = str(tmp_path / "l.sock")
    env = {k: v for k, v in ENV.items() if k != "REWARM_SOCKET"}

    def launch(*cmd: str) -> list[str]:
        return [rewarm.find_binary(), "launch", "--socket", sock, "--", *cmd]

    # The exit code and REWARM_SOCKET reach the command; the sidecar is gone after.
    r = subprocess.run(
        launch("sh", "-c", 'test -S "$REWARM_SOCKET" && exit 7'),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 7, r.stderr
    assert not os.path.exists(sock)
    # A relative --socket is exported absolute: a command that changes
    # directory (as Hydra does) still finds the sidecar.
    r = subprocess.run(
        [
            rewarm.find_binary(),
            "launch",
            "--socket",
            "rel.sock",
            "--",
            "sh",
            "-c",
            'cd / && test -S "$REWARM_SOCKET" && echo "$REWARM_SOCKET"',
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0 and r.stdout.strip() == str(tmp_path / "rel.sock"), (r.stdout, r.stderr)
    # A sidecar that refuses its flags: the launcher says so after the
    # sidecar's own message, keeps a usage error's exit code 2, and runs nothing.
    marker = tmp_path / "ran"
    r = subprocess.run(
        [rewarm.find_binary(), "launch", "--socket", sock, "--log-level", "loud", "--", "touch", str(marker)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and not marker.exists(), r.stderr
    assert '--log-level "loud"' in r.stderr and "exited before it was ready (exit status 2)" in r.stderr
    # A real torchrun job whose workers fail once and are restarted: the sidecar
    # (and its sessions) survive the restart.
    out = tmp_path / "job"
    out.mkdir()
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "--max_restarts=1",
    ]
    r = subprocess.run(
        launch(*torchrun, str(HERE / "launch_job.py"), str(out)),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    seen = json.loads((out / "attempt1.json").read_text())
    assert seen["socket"] == sock and seen["sessions_before_me"] >= 2  # attempt 0's sessions are still there
    assert not os.path.exists(sock)
    # SIGTERM to the launcher reaches the command, and the sidecar stops.
    waiter = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(42))\n"
        "print('up', flush=True)\ntime.sleep(60)"
    )
    p = subprocess.Popen(
        launch(sys.executable, "-c", waiter),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert p.stdout is not None and p.stdout.readline().strip() == "up"
    p.send_signal(signal.SIGTERM)
    assert p.wait(30) == 42
    assert not os.path.exists(sock)


def test_launch_lets_a_terminal_ctrl_c_reach_the_command_once(tmp_path: Path) -> None:
    # Under a terminal, Ctrl-C goes to the whole foreground group, the command
    # included; the launcher must not send a second one (it would cut the
    # command's own handler short). SIGKILL of the launcher stops its sidecar.
    import pty

    sock = str(tmp_path / "l.sock")
    counter = tmp_path / "sigints"
    script = (
        "import signal, sys, time\n"
        f"path = {str(counter)!r}\n"
        "def on_int(*a):\n"
        "    with open(path, 'a') as f:\n"
        "        f.write('x')\n"
        "signal.signal(signal.SIGINT, on_int)\n"
        "print('up', flush=True)\n"
        "time.sleep(3)\n"
    )
    pid, fd = pty.fork()
    if pid == 0:  # the child: a new session whose controlling terminal is the pty
        os.execvpe(
            rewarm.find_binary(),
            [rewarm.find_binary(), "launch", "--socket", sock, "--", sys.executable, "-c", script],
            ENV,
        )
    seen = b""
    while b"up" not in seen:
        seen += os.read(fd, 1024)
    os.killpg(os.tcgetpgrp(fd), signal.SIGINT)  # what the terminal does on Ctrl-C
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0
    assert counter.read_text() == "x"  # once, not twice
    # A launcher killed outright takes its sidecar with it.
    p = subprocess.Popen(
        [
            rewarm.find_binary(),
            "launch",
            "--socket",
            sock,
            "--",
            sys.executable,
            "-c",
            "import time; print('up', flush=True); time.sleep(60)",
        ],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,  # so the launcher and its command die together below
    )
    assert p.stdout is not None and p.stdout.readline().strip() == "up"
    assert os.path.exists(sock)
    os.killpg(p.pid, signal.SIGKILL)  # the sidecar has a process group of its own
    p.wait(10)
    wait_for(lambda: not os.path.exists(sock), timeout=20, what="the sidecar to stop with its launcher")


def test_connect_or_spawn_without_a_launcher(tmp_path: Path) -> None:
    env = {k: v for k, v in ENV.items() if k != "REWARM_SOCKET"}
    # The idle exit leaves room for a loaded machine between the job ending and the check below.
    env.update(XDG_RUNTIME_DIR=str(tmp_path / "xdg"), REWARM_SIDECAR_IDLE_EXIT="10s")
    os.makedirs(env["XDG_RUNTIME_DIR"], mode=0o700)
    out = tmp_path / "out"
    out.mkdir()
    finish(torchrun(out, "--steps", "50", env=env))
    socks = list((tmp_path / "xdg" / "rewarm").glob("*.sock"))
    assert len(socks) == 1  # one sidecar for the node, spawned by local rank 0
    assert (tmp_path / "xdg" / "rewarm").stat().st_mode & 0o777 == 0o700
    r0, r1 = ranks(out)
    assert r0["lrs"] == r1["lrs"] and r0["failovers"] == 0
    folder = tmp_path / "xdg" / "rewarm"
    # Both lock files (the spawner's and the server's) go with the sidecar.
    wait_for(lambda: not any(folder.iterdir()), timeout=30, what="the idle sidecar to exit and leave nothing")


def test_snapshots_survive_a_restart_and_corruption_is_refused(tmp_path: Path) -> None:
    sock, state = str(tmp_path / "s.sock"), tmp_path / "state"
    with rewarm.Sidecar(sock, "--state-dir", str(state)):
        c = rewarm.connect("socket", socket_path=sock, failover=False)
        sid = c.open_session({"kind": "cosine", "peak_lr": 1.0, "total_steps": 100}, name="kept").session_id
        c.replan(sid, 10, "anneal", steps=5, shape="linear")
        before = c.get_lr(sid, 0, 20)
        c.close()
    assert (state / "sidecar.snapshot").exists()
    with rewarm.Sidecar(sock, "--state-dir", str(state)):
        c = rewarm.connect("socket", socket_path=sock, failover=False)
        assert c.get_lr(sid, 0, 20) == before  # the same id, the same re-planned schedule
        c.close()
    blob = bytearray((state / "sidecar.snapshot").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (state / "sidecar.snapshot").write_bytes(bytes(blob))
    r = subprocess.run(
        [rewarm.find_binary(), "serve", "--socket", sock, "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 1 and "refusing to start" in r.stderr and "checksum" in r.stderr


def test_metrics_endpoint(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sock = str(tmp_path / "m.sock")
    with rewarm.Sidecar(sock, "--metrics-addr", f"127.0.0.1:{port}"):
        c = rewarm.connect("socket", socket_path=sock, failover=False)
        sid = c.open_session({"kind": "constant", "peak_lr": 0.25}, name="m").session_id
        c.get_lr(sid, 7, 3)
        with pytest.raises(rewarm.SpecError):
            c.open_session({"kind": "nope"})
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        c.close()
    assert 'rewarm_requests_total{method="get_lr"} 1' in text
    assert 'rewarm_request_errors_total{code="ERROR_CODE_INVALID_ARGUMENT",method="open_session"} 1' in text
    assert "rewarm_request_seconds_bucket" in text and "rewarm_sessions 1" in text
    assert f'rewarm_session_lr{{name="m",session="{sid}"}} 0.25' in text
    r = subprocess.run(
        [rewarm.find_binary(), "serve", "--socket", sock, "--metrics-addr", "0.0.0.0:9999"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2 and "loopback" in r.stderr


def test_another_uid_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to run a client as another uid")
    import tempfile

    # A directory the other uid can traverse (pytest's tmp dirs are 0700).
    shared = tempfile.mkdtemp(prefix="rewarm-uid-", dir="/tmp")
    os.chmod(shared, 0o755)
    sock = os.path.join(shared, "u.sock")
    probe = (
        "import os, socket, struct, sys\n"
        "os.setgid(65534); os.setuid(65534)\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n    s.connect(sys.argv[1])\nexcept PermissionError:\n    print('EACCES'); sys.exit(0)\n"
        "s.sendall(struct.pack('>I', 2) + b'\\x12\\x00')\n"  # a hello frame
        "f = s.makefile('rb')\n"
        "n = struct.unpack('>I', f.read(4))[0]\n"
        "print(f.read(n).hex())\n"
        "print('closed' if f.read(1) == b'' else 'open')\n"
    )
    with rewarm.Sidecar(sock, "--log-level", "info") as sc:
        # The 0600 socket keeps the other uid out at connect.
        r = subprocess.run([sys.executable, "-c", probe, sock], capture_output=True, text=True, timeout=30)
        assert r.stdout.strip() == "EACCES", r.stdout + r.stderr
        # Even with the file opened up, SO_PEERCRED refuses it: the peer is
        # told why, the connection is closed, and the refusal is logged.
        os.chmod(sock, 0o666)
        r = subprocess.run([sys.executable, "-c", probe, sock], capture_output=True, text=True, timeout=30)
        reply, state = r.stdout.split()
        err = pb.Response.FromString(bytes.fromhex(reply)).error
        assert err.code == pb.ERROR_CODE_PERMISSION_DENIED and "runs as uid 65534" in err.message, reply
        assert state == "closed"
        wait_for(lambda: any("another user" in line for line in sc.log), timeout=10, what="the refusal log")
        rewarm.connect("socket", socket_path=sock, failover=False).open_session(
            {"kind": "constant", "peak_lr": 1.0}
        )


def test_a_sidecar_of_another_user_says_so(tmp_path: Path) -> None:
    """Root reaches any socket whatever its mode (sudo rewarm ctl, say): the
    clients then raise the sidecar's reason, not a dropped connection."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run a sidecar as another uid")
    import shutil
    import tempfile

    shared = tempfile.mkdtemp(prefix="rewarm-uid-", dir="/tmp")
    os.chmod(shared, 0o777)
    binary = shutil.copy(rewarm.find_binary(), shared)
    sock = os.path.join(shared, "s.sock")
    proc = subprocess.Popen(
        [binary, "serve", "--socket", sock], user=65534, group=65534, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().startswith("READY"), (
            "the sidecar did not start"
        )
        for failover in (False, True):
            with pytest.raises(rewarm.ProtocolError, match=r"serves uid 65534 only.*runs as uid 0") as e:
                rewarm.connect("socket", socket_path=sock, failover=failover)
            assert e.value.code == "PERMISSION_DENIED"
        r = subprocess.run(
            [rewarm.find_binary(), "ctl", "--socket", sock, "status"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert r.returncode != 0 and "serves uid 65534 only" in r.stderr, r.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(shared, ignore_errors=True)


def test_resumed_job_gets_the_controls_of_a_restarted_sidecar(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job that saw controls 1-3 of one sidecar, checkpointed, and resumed
    against a new sidecar (no snapshot) must get the new sidecar's controls,
    whose numbers start again at 1."""
    spec = {"kind": "constant", "peak_lr": 1.0}
    sock = str(tmp_path / "a.sock")
    monkeypatch.setenv("REWARM_SOCKET", sock)

    def make() -> rewarm.RewarmOptimizer:
        p = torch.nn.Parameter(torch.zeros(1))
        p.grad = torch.zeros(1)
        return rewarm.wrap(torch.optim.SGD([p], lr=1.0), schedule=spec, backend="socket", name="job")

    with rewarm.Sidecar(sock):
        opt = make()
        for at in (100, 200, 300):
            ctl(sock, "anneal", "--at-step", str(at), "--steps", "10")
        assert len(opt.poll_control()) == 3
        state = opt.state_dict()
    assert state["rewarm"]["control_seq"] == 3
    with rewarm.Sidecar(sock):
        opt = make()
        opt.load_state_dict(state)
        assert "queued control 1" in ctl(sock, "anneal", "--at-step", "400", "--steps", "10")
        ctl(sock, "anneal", "--at-step", "500", "--steps", "10")
        got = opt.poll_control()
        assert [r["at_step"] for r in got] == [400, 500], got
        assert opt.state_dict()["rewarm"]["control_seq"] == 2
        opt.step()
        assert opt.poll_control() == []  # seen: not applied twice


def test_a_rollback_to_the_step_last_polled_polls_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Restoring a checkpoint taken at the step the job last polled at must
    not count as already polled: a control posted since would wait a step."""
    sock = str(tmp_path / "a.sock")
    monkeypatch.setenv("REWARM_SOCKET", sock)
    with rewarm.Sidecar(sock):
        p = torch.nn.Parameter(torch.zeros(1))
        opt = rewarm.wrap(
            torch.optim.SGD([p], lr=1.0), schedule={"kind": "constant", "peak_lr": 1.0}, backend="socket"
        )
        assert opt.poll_control() == []
        state = opt.state_dict()
        ctl(sock, "anneal", "--at-step", "50", "--steps", "10")
        opt.load_state_dict(state)
        assert [c["at_step"] for c in opt.poll_control()] == [50]


def test_a_control_number_is_never_reused_after_a_crash(tmp_path: Path) -> None:
    """With --state-dir a control is on disk before it is acknowledged, so a
    sidecar killed right after it restarts with the count, not before it."""
    sock, state = str(tmp_path / "s.sock"), str(tmp_path / "state")
    spec = {"kind": "constant", "peak_lr": 1.0}
    sc = rewarm.Sidecar(sock, "--state-dir", state, "--snapshot-interval", "1h")
    rewarm.connect("socket", socket_path=sock, failover=False).open_session(spec, name="job")
    assert "queued control 1" in ctl(sock, "anneal", "--at-step", "100", "--steps", "5")
    sc.proc.kill()  # no shutdown snapshot, and the periodic one is an hour away
    sc.proc.wait()
    with rewarm.Sidecar(sock, "--state-dir", state):
        assert "queued control 2" in ctl(sock, "anneal", "--at-step", "200", "--steps", "5")


def test_a_restarted_sidecar_is_never_taken_for_the_old_one(tmp_path: Path) -> None:
    """A socket client whose sidecar restarted (no snapshot) must not read the
    new sidecar's objects under its old ids: a plain client gets an error
    naming the restart, a failover client moves its objects over."""
    sock = str(tmp_path / "s.sock")
    mine = {"kind": "cosine", "peak_lr": 0.9, "total_steps": 100}
    other = {"kind": "constant", "peak_lr": 0.5}
    ref = rewarm.connect("inprocess")
    want = ref.get_lr(ref.open_session(mine).session_id, 10, count=5)
    sc = rewarm.Sidecar(sock)
    plain = rewarm.connect("socket", socket_path=sock, failover=False)
    safe = rewarm.connect("socket", socket_path=sock)
    pid, sid = plain.open_session(mine).session_id, safe.open_session(mine).session_id
    sc.proc.kill()
    sc.proc.wait()
    with rewarm.Sidecar(sock):
        stranger = rewarm.connect("socket", socket_path=sock, failover=False)
        stranger.open_session(other)
        stranger.open_session(other)  # ids 1 and 2 now name the stranger's sessions
        with pytest.raises(rewarm.TransportError, match="restarted"):
            plain.get_lr(pid, 10, count=5)
        assert safe.get_lr(sid, 10, count=5) == want


def test_controls_a_job_cannot_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ctl refuses a control that no open session would take or that clashes
    with one still queued; one the plan refuses when it arrives (the loop
    re-planned in between) is skipped with a warning, not raised into the
    loop; and a job opened later does not take the controls posted before."""
    spec = {"kind": "constant", "peak_lr": 1.0}
    sock = str(tmp_path / "c.sock")
    monkeypatch.setenv("REWARM_SOCKET", sock)

    def make(name: str) -> rewarm.RewarmOptimizer:
        p = torch.nn.Parameter(torch.zeros(1))
        return rewarm.wrap(torch.optim.SGD([p], lr=1.0), schedule=spec, backend="socket", name=name)

    def ctl_fails(*args: str) -> str:
        r = subprocess.run(
            [rewarm.find_binary(), "ctl", "--socket", sock, *args], capture_output=True, text=True, timeout=30
        )
        assert r.returncode != 0, r.stdout
        return r.stderr

    with rewarm.Sidecar(sock):
        assert "no session is open" in ctl_fails("anneal", "--at-step", "100", "--steps", "10")
        opt = make("job")
        assert 'no open session is named "jbo"' in ctl_fails(
            "anneal", "--name", "jbo", "--at-step", "9", "--steps", "1"
        )
        assert "queued control 1" in ctl(sock, "anneal", "--at-step", "150", "--steps", "10")
        assert "previous re-plan's step (150)" in ctl_fails("anneal", "--at-step", "120", "--steps", "10")
        opt.replan("anneal", at_step=200, steps=10)  # the loop's own re-plan, before it polls
        with pytest.warns(UserWarning, match=r"skipping a control \(anneal at step 150\).*previous re-plan"):
            assert opt.poll_control() == []
        assert opt.state_dict()["rewarm"]["control_seq"] == 1
        rank1 = make("job")  # the same job's next rank, opened late: it takes control 1
        assert [r["at_step"] for r in rank1.poll_control()] == [150]
        later = make("next")  # another job
        assert later.poll_control() == []  # control 1 was posted before it opened
        assert later.state_dict()["rewarm"]["control_seq"] == 1
        assert "queued control 2" in ctl(sock, "anneal", "--at-step", "300", "--steps", "10")
        later.step()  # it polls at most once per step
        assert [r["at_step"] for r in later.poll_control()] == [300]


def test_a_control_that_cannot_be_saved_is_refused(tmp_path: Path) -> None:
    """An acknowledged control is on disk. When the state dir stops taking
    files (a file now stands at its path, which stops root too), ctl says
    so and nothing is queued; once the dir is back, posting works again."""
    sock, state = str(tmp_path / "s.sock"), tmp_path / "state"
    with rewarm.Sidecar(sock, "--state-dir", str(state), "--snapshot-interval", "1h"):
        rewarm.connect("socket", socket_path=sock, failover=False).open_session(
            {"kind": "constant", "peak_lr": 1.0}, name="job"
        )
        state.rename(tmp_path / "moved")
        state.write_text("not a directory")
        r = subprocess.run(
            [rewarm.find_binary(), "ctl", "--socket", sock, "anneal", "--at-step", "100", "--steps", "5"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert r.returncode != 0 and "could not be saved to the state dir" in r.stderr, r
        state.unlink()
        (tmp_path / "moved").rename(state)
        # Nobody saw the refused control or its number: this one is control 1.
        assert "queued control 1" in ctl(sock, "anneal", "--at-step", "100", "--steps", "5")
        assert "1 controls posted" in ctl(sock, "status")
