"""rewarm against torch's own schedulers, over 5,000 updates, wherever the
curves are defined to be the same, within 1e-9 x peak.

Each case writes down the mapping: the torch scheduler (stepped once per
optimizer update, after optimizer.step()) and the rewarm spec that equals it.
For both, the rate (and momentum) update n+1 uses is the group's value before
that update.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch.optim import lr_scheduler as L

import rewarm

STEPS = 5000
BASE = 0.1


def _run_torch(make_sched: Callable[[torch.optim.Optimizer], Any], opt_cls: type, **opt_kw: Any):
    p = torch.nn.Parameter(torch.zeros(2))
    opt = opt_cls([p], lr=BASE, **opt_kw)
    sched = make_sched(opt)
    lrs, moms = [], []
    for _ in range(STEPS):
        g = opt.param_groups[0]
        lrs.append(g["lr"])
        moms.append(g["betas"][0] if "betas" in g else g.get("momentum"))
        p.grad = torch.ones(2)
        opt.step()
        sched.step()
    return lrs, moms


def _run_rewarm(spec: dict[str, Any], opt_cls: type, **opt_kw: Any):
    p = torch.nn.Parameter(torch.zeros(2))
    opt = rewarm.wrap(opt_cls([p], lr=0.0, **opt_kw), schedule=spec)
    lrs, moms = [], []
    for _ in range(STEPS):
        g = opt.param_groups[0]
        lrs.append(g["lr"])
        moms.append(g["betas"][0] if "betas" in g else g.get("momentum"))
        p.grad = torch.ones(2)
        opt.step()
    return lrs, moms


SGD = (torch.optim.SGD, {"momentum": 0.9})
ADAM = (torch.optim.Adam, {})

CASES = [
    # CosineAnnealingLR(T_max=T, eta_min=m) == {cosine, peak_lr: base, min_lr: m, total_steps: T}
    (
        "CosineAnnealingLR",
        lambda o: L.CosineAnnealingLR(o, T_max=STEPS, eta_min=1e-3),
        {"kind": "cosine", "peak_lr": BASE, "min_lr": 1e-3, "total_steps": STEPS},
        SGD,
        False,
    ),
    # CosineAnnealingWarmRestarts(T_0, T_mult, eta_min) == {sgdr, cycle_steps: T_0, cycle_mul: T_mult, min_lr}
    (
        "CosineAnnealingWarmRestarts T_mult=1",
        lambda o: L.CosineAnnealingWarmRestarts(o, T_0=700, eta_min=1e-4),
        {"kind": "sgdr", "peak_lr": BASE, "min_lr": 1e-4, "cycle_steps": 700},
        SGD,
        False,
    ),
    (
        "CosineAnnealingWarmRestarts T_mult=2",
        lambda o: L.CosineAnnealingWarmRestarts(o, T_0=300, T_mult=2, eta_min=1e-4),
        {"kind": "sgdr", "peak_lr": BASE, "min_lr": 1e-4, "cycle_steps": 300, "cycle_mul": 2},
        SGD,
        False,
    ),
    (
        "CosineAnnealingWarmRestarts T_mult=3",
        lambda o: L.CosineAnnealingWarmRestarts(o, T_0=100, T_mult=3),
        {"kind": "sgdr", "peak_lr": BASE, "cycle_steps": 100, "cycle_mul": 3},
        SGD,
        False,
    ),
    # OneCycleLR(max_lr, total_steps, pct_start, anneal_strategy, div_factor, final_div_factor, three_phase,
    #            base_momentum, max_momentum) == {onecycle, peak_lr: max_lr, same names}; LR and momentum
    (
        "OneCycleLR cos, SGD momentum",
        lambda o: L.OneCycleLR(o, max_lr=BASE, total_steps=STEPS),
        {"kind": "onecycle", "peak_lr": BASE, "total_steps": STEPS},
        SGD,
        True,
    ),
    (
        "OneCycleLR linear three-phase, Adam beta1",
        lambda o: L.OneCycleLR(
            o,
            max_lr=BASE,
            total_steps=STEPS,
            pct_start=0.25,
            anneal_strategy="linear",
            three_phase=True,
            div_factor=10,
            final_div_factor=100,
            base_momentum=0.8,
            max_momentum=0.9,
        ),
        {
            "kind": "onecycle",
            "peak_lr": BASE,
            "total_steps": STEPS,
            "pct_start": 0.25,
            "anneal_strategy": "linear",
            "three_phase": True,
            "div_factor": 10,
            "final_div_factor": 100,
            "base_momentum": 0.8,
            "max_momentum": 0.9,
        },
        ADAM,
        True,
    ),
    # PolynomialLR(total_iters=T, power=a) == {polynomial, peak_lr: base, total_steps: T, power: a}
    (
        "PolynomialLR",
        lambda o: L.PolynomialLR(o, total_iters=4000, power=2.0),
        {"kind": "polynomial", "peak_lr": BASE, "total_steps": 4000, "power": 2.0},
        SGD,
        False,
    ),
    # StepLR(step_size, gamma) == {step, peak_lr: base, step_size, gamma}
    (
        "StepLR",
        lambda o: L.StepLR(o, step_size=450, gamma=0.7),
        {"kind": "step", "peak_lr": BASE, "step_size": 450, "gamma": 0.7},
        SGD,
        False,
    ),
    # MultiStepLR(milestones, gamma) == {multistep, peak_lr: base, milestones, gamma}
    (
        "MultiStepLR",
        lambda o: L.MultiStepLR(o, milestones=[500, 1500, 4000], gamma=0.3),
        {"kind": "multistep", "peak_lr": BASE, "milestones": [500, 1500, 4000], "gamma": 0.3},
        SGD,
        False,
    ),
    # ExponentialLR(gamma) == {exponential, peak_lr: base, gamma}
    (
        "ExponentialLR",
        lambda o: L.ExponentialLR(o, gamma=0.999),
        {"kind": "exponential", "peak_lr": BASE, "gamma": 0.999},
        SGD,
        False,
    ),
    # CyclicLR(base_lr, max_lr, step_size_up, step_size_down, mode, gamma, base/max_momentum)
    #   == {cyclic, min_lr: base_lr, peak_lr: max_lr, same names}; LR and momentum
    (
        "CyclicLR triangular",
        lambda o: L.CyclicLR(o, base_lr=0.01, max_lr=BASE, step_size_up=300),
        {"kind": "cyclic", "min_lr": 0.01, "peak_lr": BASE, "step_size_up": 300},
        SGD,
        True,
    ),
    (
        "CyclicLR triangular2 asymmetric",
        lambda o: L.CyclicLR(
            o, base_lr=0.01, max_lr=BASE, step_size_up=200, step_size_down=500, mode="triangular2"
        ),
        {
            "kind": "cyclic",
            "min_lr": 0.01,
            "peak_lr": BASE,
            "step_size_up": 200,
            "step_size_down": 500,
            "mode": "triangular2",
        },
        SGD,
        True,
    ),
    (
        "CyclicLR exp_range",
        lambda o: L.CyclicLR(o, base_lr=0.01, max_lr=BASE, step_size_up=250, mode="exp_range", gamma=0.9995),
        {
            "kind": "cyclic",
            "min_lr": 0.01,
            "peak_lr": BASE,
            "step_size_up": 250,
            "mode": "exp_range",
            "gamma": 0.9995,
        },
        SGD,
        True,
    ),
    # LinearLR(start_factor=s, end_factor=e, total_iters=T), falling:
    #   == {linear, peak_lr: s*base, min_lr: e*base, total_steps: T}
    (
        "LinearLR decay",
        lambda o: L.LinearLR(o, start_factor=1.0, end_factor=0.05, total_iters=3000),
        {"kind": "linear", "peak_lr": BASE, "min_lr": 0.05 * BASE, "total_steps": 3000},
        SGD,
        False,
    ),
    # rising (a warmup): == {linear, warmup_start_lr: s*base, peak_lr = min_lr = e*base,
    #                        warmup_steps = total_steps = T}
    (
        "LinearLR warmup",
        lambda o: L.LinearLR(o, start_factor=0.01, end_factor=1.0, total_iters=800),
        {
            "kind": "linear",
            "warmup_start_lr": 0.01 * BASE,
            "peak_lr": BASE,
            "min_lr": BASE,
            "warmup_steps": 800,
            "total_steps": 800,
        },
        SGD,
        False,
    ),
]


@pytest.mark.parametrize(("name", "make", "spec", "opt", "momentum"), CASES, ids=[c[0] for c in CASES])
def test_matches_torch(name: str, make, spec: dict, opt, momentum: bool) -> None:
    opt_cls, kw = opt
    t_lr, t_mom = _run_torch(make, opt_cls, **kw)
    r_lr, r_mom = _run_rewarm(spec, opt_cls, **kw)
    worst = max(abs(a - b) for a, b in zip(t_lr, r_lr, strict=True))
    assert worst <= 1e-9 * BASE, f"{name}: worst LR difference {worst:.3e}"
    # The curve is not trivially flat: it moves by a real amount.
    assert max(t_lr) - min(t_lr) > 0.01 * BASE
    if momentum:
        worst_m = max(abs(a - b) for a, b in zip(t_mom, r_mom, strict=True))
        assert worst_m <= 1e-9, f"{name}: worst momentum difference {worst_m:.3e}"
        assert max(t_mom) - min(t_mom) > 0.01
