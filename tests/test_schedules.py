"""The schedule library through the Python face: previews, re-plans, reports,
momentum and weight-decay schedules, per-group settings, refined schedules,
and the errors bad specs get."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import pytest
import torch

import rewarm
from tests.reference import cosine_ref

INF = {
    "kind": "infinite",
    "peak_lr": 1.0,
    "const_lr": 0.5,
    "min_lr": 0.05,
    "warmup_steps": 10,
    "cooldown_steps": 20,
}


def test_preview_values_and_phases() -> None:
    p = rewarm.preview(
        {**INF, "constant_steps": 30, "anneal_steps": 40}, [0, 5, 10, 20, 30, 60, 80, 100, 500]
    )
    want = [0, 0.5, 1, 0.75, 0.5, 0.5, 0.5 * math.sqrt(0.1), 0.05, 0.05]
    assert p["lr"] == pytest.approx(want, rel=1e-12, abs=1e-15)
    assert [name for name, _ in p["phases"]] == ["warmup", "cooldown", "constant", "anneal", "floor"]
    assert p["momentum"] is None and p["weight_decay"] is None
    q = rewarm.preview(
        {"kind": "constant", "peak_lr": 1.0, "weight_decay": {"start": 0.0, "end": 0.1, "steps": 10}}, 11
    )
    assert q["step"] == list(range(11)) and q["weight_decay"] == pytest.approx([i / 100 for i in range(11)])


@pytest.mark.parametrize(
    ("spec", "field", "value"),
    [
        ({"kind": "nope"}, "kind", "nope"),
        ({"kind": "wsd", "peak_lr": 1.0, "decay_steps": 10}, "stable_steps", ""),
        ({"kind": "multistep", "peak_lr": 1.0, "milestones": [5, 3]}, "milestones[1]", "3"),
        ({"kind": "cosine", "peak_lr": float("nan"), "total_steps": 5}, "peak_lr", "NaN"),
        ({**INF, "constant_steps": 5, "anneal_steps": 5, "min_lr": 0.0}, "min_lr", "0"),
        (
            {"kind": "stages", "stages": [{"steps": 5, "schedule": {"kind": "cosine", "peak_lr": -1.0}}]},
            "stages[0].schedule.peak_lr",
            "-1",
        ),
        (
            {"kind": "constant", "peak_lr": 1.0, "weight_decay": {"start": 0.0, "end": 1.0}},
            "weight_decay.steps",
            "0",
        ),
    ],
)
def test_bad_specs(spec: dict, field: str, value: str) -> None:
    with pytest.raises(rewarm.SpecError) as ei:
        rewarm.preview(spec, 3)
    assert ei.value.field == field and value in str(ei.value)


def _opt(spec: dict, **kw):
    p = torch.nn.Parameter(torch.zeros(1))
    return p, rewarm.wrap(torch.optim.SGD([p], lr=0.0, momentum=0.9), schedule=spec, **kw)


def _steps(p, opt, k: int) -> list[float]:
    """Run k updates; returns the rate each one uses, as the group shows it before the update."""
    out = []
    for _ in range(k):
        out.append(opt.param_groups[0]["lr"])
        p.grad = torch.ones(1)
        opt.step()
    return out


def test_replan_anneal_extend_and_new_stage() -> None:
    p, opt = _opt(INF, window=8)
    _steps(p, opt, 100)
    info = opt.replan("anneal", steps=20, shape="linear")
    assert info.plan_version == 1
    lrs = _steps(p, opt, 30)
    assert lrs[0] == 0.5 and lrs[10] == pytest.approx(0.275) and lrs[20:] == [0.05] * 10
    opt.replan("new_stage", schedule={"kind": "cosine", "peak_lr": 0.2, "total_steps": 10})
    assert _steps(p, opt, 3) == pytest.approx(
        [0.2, 0.2 * 0.5 * (1 + math.cos(math.pi / 10)), 0.2 * 0.5 * (1 + math.cos(math.pi / 5))]
    )
    # total_steps counts updates: the stage began at update 130 and now ends at 150.
    opt.replan("extend", total_steps=150)
    assert opt.lrs_at(150)[0] == 0.0 and opt.lrs_at(149)[0] > 0
    before = opt.get_last_lr()[0]
    nxt = _steps(p, opt, 1)[0]
    assert nxt < before and nxt > 0.15
    with pytest.raises(ValueError, match="already applied"):
        opt.replan("anneal", at_step=5, steps=3)
    with pytest.raises(rewarm.SpecError) as ei:
        opt.replan("anneal", steps=0)
    assert ei.value.field == "steps"
    with pytest.raises(rewarm.SpecError) as ei:
        opt.replan("rewind", steps=1)
    assert ei.value.field == "op"


def test_replan_at_future_step_and_state_dict() -> None:
    spec = {"kind": "cosine", "peak_lr": 1.0, "min_lr": 0.1, "total_steps": 100}
    p, opt = _opt(spec)
    opt.replan("anneal", at_step=50, steps=10, shape="cosine")
    lrs = _steps(p, opt, 70)
    # The cosine up to the anneal, then a cosine from its rate there to min_lr
    # over 10 updates, then min_lr.
    v50 = cosine_ref(50, 1.0, 100, 0, 0.1)
    want = [cosine_ref(n, 1.0, 100, 0, 0.1) for n in range(51)]
    want += [0.1 + (v50 - 0.1) * 0.5 * (1 + math.cos(math.pi * (n - 50) / 10)) for n in range(51, 60)]
    assert lrs[:60] == pytest.approx(want, rel=1e-12)
    assert lrs[60:] == [0.1] * 10
    sd = opt.state_dict()
    p2, opt2 = _opt(spec)
    opt2.load_state_dict(sd)
    assert _steps(p2, opt2, 5) == [0.1] * 5


def test_plateau_report() -> None:
    p, opt = _opt({"kind": "plateau", "peak_lr": 1.0, "patience": 1, "factor": 0.5})
    _steps(p, opt, 5)
    for m in (1.0, 1.0, 1.0):  # best, bad 1, bad 2 > patience 1 -> halve
        opt.report(m)
    assert _steps(p, opt, 1) == [0.5]
    _, cos = _opt({"kind": "cosine", "peak_lr": 1.0, "total_steps": 10})
    with pytest.raises(rewarm.SpecError, match="plateau"):
        cos.report(1.0)


def test_momentum_and_weight_decay_reach_the_groups() -> None:
    spec = {
        "kind": "onecycle",
        "peak_lr": 1.0,
        "total_steps": 100,
        "anneal_strategy": "linear",
        "weight_decay": {"start": 0.0, "end": 0.1, "steps": 100},
    }
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    adam = torch.optim.AdamW([{"params": [a]}, {"params": [b], "wd_mult": 0.0}], lr=0.0)
    opt = rewarm.wrap(adam, schedule=spec)
    for _ in range(29):
        a.grad, b.grad = torch.ones(1), torch.ones(1)
        opt.step()
    g0, g1 = opt.param_groups  # the values of update 30 (n = 29)
    assert g0["betas"][0] == pytest.approx(0.85) and g0["betas"][1] == 0.999
    assert g0["weight_decay"] == pytest.approx(0.029) and g1["weight_decay"] == 0.0
    with pytest.raises(ValueError, match="neither 'momentum' nor 'betas'"):
        rewarm.wrap(torch.optim.Adagrad([torch.nn.Parameter(torch.zeros(1))]), schedule=spec)


def test_group_absolute_range() -> None:
    spec = {"kind": "cosine", "peak_lr": 1.0, "min_lr": 0.1, "total_steps": 10}
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = rewarm.wrap(
        torch.optim.SGD([{"params": [a]}, {"params": [b]}], lr=0.0),
        schedule=spec,
        groups=[{}, {"min_lr": 0.0, "peak_lr": 0.01}],
    )
    for n in range(12):
        a.grad, b.grad = torch.ones(1), torch.ones(1)
        opt.step()
        lr0, lr1 = (g["lr"] for g in opt.param_groups)
        assert lr1 == pytest.approx((lr0 - 0.1) / 0.9 * 0.01, abs=1e-15), n
    with pytest.raises(ValueError, match="unknown keys"):
        rewarm.wrap(torch.optim.SGD([a], lr=0.0), schedule=spec, groups=[{"max_lr": 1.0}])


def test_grad_norms_feed_a_refined_schedule() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 1)
    opt = rewarm.wrap(
        torch.optim.SGD(model.parameters(), lr=0.0),
        schedule={"kind": "linear", "peak_lr": 0.1, "total_steps": 60},
        track_grad_norm="l2",
    )
    for _ in range(60):
        x = torch.randn(16, 8)
        model(x).pow(2).mean().backward()
        want = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in model.parameters()])).item()
        opt.step()
        assert opt.grad_norms[-1] == pytest.approx(want, rel=1e-5)
        opt.zero_grad()
    spec = rewarm.refined_spec(opt.grad_norms, peak_lr=0.1)
    lrs = rewarm.preview(spec, 61)["lr"]
    assert max(lrs) == pytest.approx(0.1) and lrs[-2:] == [0.0, 0.0]
    # An overflow step records a non-finite norm; the schedule drops it, on
    # both transports, as if the step had recorded nothing.
    norms = list(opt.grad_norms)
    spiky = [*norms[:20], math.nan, *norms[20:40], math.inf, *norms[40:]]
    want = rewarm.preview(rewarm.refined_spec(norms, peak_lr=0.1, total_steps=62), 63)["lr"]
    assert rewarm.preview(rewarm.refined_spec(spiky, peak_lr=0.1), 63)["lr"] == want
    with rewarm.Sidecar() as sc:
        remote = rewarm.connect("socket", socket_path=sc.path, failover=False)
        sid = remote.open_session(rewarm.refined_spec(spiky, peak_lr=0.1)).session_id
        assert remote.get_lr(sid, 0, count=63) == want


def test_cli_show_and_plot(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "kind: wsd\npeak_lr: 0.001\nwarmup_steps: 100\ntotal_steps: 1000\ndecay_steps: 200\n"
        "momentum: {start: 0.9}\n"
    )
    out = subprocess.run(
        [rewarm.find_binary(), "show", str(spec), "--at", "0,50,100,900,1000"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.splitlines()[1:6]]
    got = {int(r[0]): float(r[1]) for r in rows}
    assert got == pytest.approx(
        {0: 0.0, 50: 0.0005, 100: 0.001, 900: 0.001 * (1 - math.sqrt(0.5)), 1000: 0.0}
    )
    assert "stable" in out.stdout and "momentum" in out.stdout
    for name in ("p.png", "p.svg"):
        dst = tmp_path / name
        r = subprocess.run(
            [rewarm.find_binary(), "plot", str(spec), "--steps", "1200", "-o", str(dst)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        head = dst.read_bytes()[:200]
        assert head.startswith(b"\x89PNG") if name.endswith("png") else b"<svg" in head or b"<?xml" in head
    bad = subprocess.run(
        [rewarm.find_binary(), "show", "{kind: cosine, peak_lr: 1}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad.returncode == 1 and "total_steps" in bad.stderr
