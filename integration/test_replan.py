"""Re-plans survive a checkpoint. Each scenario is run uninterrupted, and
checkpointed at step 137 and resumed in a new process; the LR sequences must
be identical. Across the scenarios every operation (extend continuous and
proportional, anneal, new_stage) is applied both before the checkpoint (so it
travels in the state) and after it (so a restored session takes re-plans)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from .conftest import run_script

STAGE = {"kind": "cosine", "peak_lr": 0.03, "min_lr": 0.003, "warmup_steps": 10, "total_steps": 150}
SCENARIOS = {
    # extend before the checkpoint; new stage and an extend inside it after.
    "extend-then-stage": [
        {"at": 100, "op": "extend", "total_steps": 400},
        {"at": 180, "op": "new_stage", "schedule": STAGE},
        {"at": 230, "op": "extend", "total_steps": 380},  # in updates: the stage (from 180) runs 200
    ],
    # new stage before; anneal after.
    "stage-then-anneal": [
        {"at": 60, "op": "new_stage", "schedule": STAGE},
        {"at": 180, "op": "anneal", "steps": 40, "shape": "exp", "min_lr": 0.001},
    ],
    # anneal before; proportional extend of a later stage after.
    "anneal-then-proportional": [
        {"at": 90, "op": "anneal", "steps": 30, "shape": "1-sqrt"},
        {"at": 150, "op": "new_stage", "schedule": STAGE},
        {"at": 200, "op": "extend", "total_steps": 450, "mode": "proportional"},  # the stage runs 300
    ],
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_replans_survive_resume(name: str, tmp_path: Path) -> None:
    replans = json.dumps(SCENARIOS[name])
    ck = str(tmp_path / "ck.pt")
    run_script("replan_job.py", "--steps", "300", "--log", str(tmp_path / "full.json"), "--replans", replans)
    run_script(
        "replan_job.py",
        "--steps",
        "137",
        "--log",
        str(tmp_path / "a.json"),
        "--replans",
        replans,
        "--save",
        ck,
    )
    run_script(
        "replan_job.py",
        "--steps",
        "300",
        "--log",
        str(tmp_path / "b.json"),
        "--replans",
        replans,
        "--load",
        ck,
    )
    full = json.loads((tmp_path / "full.json").read_text())
    a = json.loads((tmp_path / "a.json").read_text())
    b = json.loads((tmp_path / "b.json").read_text())
    assert len(a) == 137 and a + b == full  # bit-identical
    # The re-plans really changed the schedule.
    if name == "extend-then-stage":
        assert math.isclose(full[100], full[99], rel_tol=0.02)  # continuous extend
        assert full[180] == 0.0  # the stage re-warms from 0
        assert full[229] > full[230] * 0.98  # continuous inside the stage too
    if name == "stage-then-anneal":
        assert full[60] == 0.0
        assert full[220] == pytest.approx(0.001)
    if name == "anneal-then-proportional":
        assert full[120] == pytest.approx(0.002)  # annealed to the cosine's min_lr
        # 50 of 150 stage steps done, 250 left to its new end: it continues at step 125 of the
        # stage rebuilt for 375 steps (the same third done, so a jump), ending at update 450.
        assert full[200] != pytest.approx(full[199], rel=1e-3)
