"""Replay sampling under torchrun with gloo: the ranks' ids partition every
global batch, the proportions hold, DataLoader workers work, and a run killed
at step 211 resumes (even at another world size) on the same global stream."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import rewarm

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from ddp_replay import SIZES, SPEC  # noqa: E402

PILE = SIZES["pile"]


def torchrun(nproc: int, out: Path, *args: str, expect_ok: bool = True) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("REWARM_SOCKET", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={nproc}",
            str(HERE / "ddp_replay.py"),
            "--out",
            str(out),
            *args,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if expect_ok:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def read(out: Path, nproc: int) -> list[dict[int, list[int]]]:
    return [
        {int(k): v for k, v in json.loads((out / f"rank{r}.json").read_text()).items()} for r in range(nproc)
    ]


@pytest.mark.parametrize(("nproc", "workers"), [(2, 2), (3, 0)])
def test_ranks_partition_global_batches(nproc: int, workers: int, tmp_path: Path) -> None:
    torchrun(nproc, tmp_path, "--workers", str(workers))
    ranks = read(tmp_path, nproc)
    ref = rewarm.ReplaySampler(SPEC, rank=0, world_size=1)
    B = SPEC["global_batch_size"]
    pile_total = 0
    for step in range(500):
        parts = [r[step] for r in ranks]
        union = [i for p in parts for i in p]
        assert len(union) == B and len(set(union)) == B, f"step {step}: ranks overlap"
        assert sorted(union) == sorted(ref.global_batch(step).tolist())
        pile = sum(1 for i in union if i < PILE)
        if step < 100:
            assert pile == B
        else:
            assert abs(pile - 0.05 * B) < 1  # 1 or 2 of 24
            pile_total += pile
    # Every prefix of the replay stage is within one sample of 5%.
    assert abs(pile_total - 0.05 * B * 400) < 1


def test_killed_run_resumes_on_the_same_stream(tmp_path: Path) -> None:
    full, split = tmp_path / "full", tmp_path / "split"
    full.mkdir()
    split.mkdir()
    torchrun(2, full)
    torchrun(2, split, "--stop-at", "211", expect_ok=False)  # the workers SIGKILL themselves
    assert json.loads((split / "sampler.json").read_text())["step"] == 211
    torchrun(3, split, "--resume")  # and come back with another world size
    before = read(split, 2)
    after = read(split, 3)
    want = read(full, 2)
    for step in range(500):
        if step < 211:
            got = before[0][step] + before[1][step]
        else:
            got = after[0][step] + after[1][step] + after[2][step]
        assert got == want[0][step] + want[1][step], f"step {step} differs after the resume"
