"""(d) Checkpoint at step 137, load it in a new process: the continued LR
sequence equals an uninterrupted run, on both backends (for the socket, the
second process even talks to a freshly started sidecar)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import rewarm

from .conftest import run_script


@pytest.mark.parametrize("backend", ["inprocess", "socket"])
def test_resume_in_new_process(backend: str, tmp_path: Path) -> None:
    def job(*args: str) -> None:
        if backend == "socket":
            with rewarm.Sidecar() as sc:
                run_script("resume_job.py", "--backend", backend, *args, env={"REWARM_SOCKET": sc.path})
        else:
            run_script("resume_job.py", "--backend", backend, *args)

    ck = str(tmp_path / "ck.pt")
    job("--steps", "300", "--log", str(tmp_path / "full.json"))
    job("--steps", "137", "--log", str(tmp_path / "a.json"), "--save", ck)
    job("--steps", "300", "--log", str(tmp_path / "b.json"), "--load", ck)
    full = json.loads((tmp_path / "full.json").read_text())
    a = json.loads((tmp_path / "a.json").read_text())
    b = json.loads((tmp_path / "b.json").read_text())
    assert len(full) == 300 and len(a) == 137 and len(b) == 163
    assert a + b == full  # exact: same floats, same order
    losses_full = json.loads((tmp_path / "full.json.loss").read_text())
    losses_b = json.loads((tmp_path / "b.json.loss").read_text())
    assert losses_b == losses_full[137:]  # model and optimizer state resumed too
