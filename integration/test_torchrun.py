"""(c) torchrun --nproc_per_node 2 (gloo) trains for 200 steps with the LR
served by `rewarm serve`; every rank sees the same closed-form sequence."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import rewarm
from tests.reference import cosine_ref

HERE = Path(__file__).resolve().parent


def test_two_rank_torchrun_with_sidecar(tmp_path: Path) -> None:
    with rewarm.Sidecar() as sc:
        env = {**os.environ, "REWARM_SOCKET": sc.path, "OMP_NUM_THREADS": "1"}
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                "--nproc_per_node=2",
                str(HERE / "ddp_train.py"),
                "--out",
                str(tmp_path),
                "--steps",
                "200",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for r in ranks:
        assert r["backend"] == "socket" and r["world_size"] == 2 and r["params_in_sync"]
        assert len(r["lrs"]) == 200
    assert ranks[0]["lrs"] == ranks[1]["lrs"]
    for n, lr in enumerate(ranks[0]["lrs"]):
        want = cosine_ref(n, 0.02, 180, 25, 0.002, 0.0)
        assert math.isclose(lr, want, rel_tol=1e-12, abs_tol=1e-18), (n, lr, want)
    assert ranks[0]["losses"][-1] < ranks[0]["losses"][0]


def test_rank0_anneal_switches_every_rank_at_once(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("REWARM_SOCKET", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(HERE / "ddp_anneal.py"),
            "--out",
            str(tmp_path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2))
    assert r0 == r1
    # Until step 120 the infinite schedule holds const_lr; then a cosine anneal
    # from 0.01 to min_lr 0.001 over 50 updates.
    assert r0[119] == 0.01 and r0[120] == 0.01
    assert math.isclose(r0[145], 0.001 + 0.009 * 0.5, rel_tol=1e-12)
    assert r0[170] == 0.001 and r0[199] == 0.001
