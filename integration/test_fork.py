"""(e) A forked child that touches the in-process backend gets a clear error
instead of hanging in the Go runtime. The time limits below are watchdogs
that turn a hang into a failure, not speed checks: the error comes at once."""

from __future__ import annotations

import multiprocessing as mp
import os
import select
import time

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

import rewarm

SPEC = {"kind": "cosine", "peak_lr": 0.1, "total_steps": 1000}


# A child that has not answered by then hangs (in the Go runtime, say).
WATCHDOG = 120.0


def _run_in_fork(fn) -> str:
    """Fork, run fn in the child, return what it reported."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        try:
            msg = fn()
        except BaseException as exc:
            msg = f"{type(exc).__name__}: {exc}"
        os.write(w, msg.encode()[:4000])
        os._exit(0)
    os.close(w)
    ready, _, _ = select.select([r], [], [], WATCHDOG)
    if not ready:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail(f"the forked child hung ({WATCHDOG:g} s without an answer)")
    out = os.read(r, 4096).decode()
    os.close(r)
    os.waitpid(pid, 0)
    return out


def test_forked_child_gets_clear_error() -> None:
    p = torch.nn.Parameter(torch.zeros(1))
    # A small window, so the child below runs past the values fetched before fork.
    opt = rewarm.wrap(torch.optim.SGD([p], lr=1.0), schedule=SPEC, backend="inprocess", window=16)
    opt.step()

    def touch_session() -> str:
        opt.state_dict()  # needs Go
        return "no error"

    out = _run_in_fork(touch_session)
    assert out.startswith("ForkError") and "fork()" in out and "backend='socket'" in out, out

    def new_backend() -> str:
        rewarm.connect("inprocess")
        return "no error"

    out = _run_in_fork(new_backend)
    assert out.startswith("ForkError"), out

    def step_past_window() -> str:
        for _ in range(100):  # runs past the prefetched window
            opt.step()
        return "no error"

    out = _run_in_fork(step_past_window)
    assert out.startswith("ForkError"), out
    # The parent is unaffected.
    opt.step()
    assert opt.steps_applied == 2


class _Touch(Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> int:
        rewarm.connect("inprocess")
        return i


def test_dataloader_worker_fails_fast() -> None:
    rewarm.connect("inprocess")  # the parent loads the Go runtime first
    loader = DataLoader(
        _Touch(),
        batch_size=1,
        num_workers=1,
        multiprocessing_context=mp.get_context("fork"),
        timeout=WATCHDOG,  # a hung worker fails with "timed out", which the match below refuses
    )
    with pytest.raises(Exception, match=r"ForkError|forked child"):
        list(loader)


def test_socket_client_reconnects_with_a_handshake_in_a_forked_child() -> None:
    # The documented way out of the fork problem: a socket client made in the
    # parent is used in the child, which needs a connection of its own.
    with rewarm.Sidecar() as sc:
        for failover in (False, True):
            client = rewarm.connect("socket", socket_path=sc.path, failover=failover)
            sid = client.open_session(SPEC).session_id
            want = client.get_lr(sid, 10, count=3)

            def child(client: rewarm.Client = client, sid: int = sid) -> str:
                return repr(client.get_lr(sid, 10, count=3))

            out = _run_in_fork(child)
            assert out == repr(want), (failover, out)
            assert client.get_lr(sid, 10, count=3) == want  # the parent's connection is untouched
            client.close()


def test_socket_client_survives_the_servers_idle_close() -> None:
    with rewarm.Sidecar(None, "--conn-idle-timeout", "200ms") as sc:
        client = rewarm.connect("socket", socket_path=sc.path, failover=False)
        sid = client.open_session(SPEC).session_id
        want = client.get_lr(sid, 0, count=5)
        time.sleep(0.6)  # the server closes the idle connection
        assert client.get_lr(sid, 0, count=5) == want
        client.close()
