"""(a) Both backends follow the issue's closed form for 10,000 steps, and
(b) match torch's own CosineAnnealingLR where the two are defined to agree."""

from __future__ import annotations

import math

import pytest
import torch

import rewarm
from tests.reference import cosine_ref

STEPS = 10_000
SPEC = {
    "kind": "cosine",
    "peak_lr": 3e-4,
    "min_lr": 3e-5,
    "warmup_steps": 500,
    "warmup_start_lr": 1e-6,
    "total_steps": 9_000,
}


@pytest.mark.parametrize("backend", ["inprocess", "socket"])
def test_closed_form_10k_steps(
    backend: str, sidecar: rewarm.Sidecar, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REWARM_SOCKET", sidecar.path)
    p = torch.nn.Parameter(torch.zeros(4))
    opt = rewarm.wrap(torch.optim.SGD([p], lr=1.0), schedule=SPEC, backend=backend)
    assert opt.backend == backend
    worst = 0.0
    for n in range(STEPS):
        p.grad = torch.ones(4)
        opt.step()
        want = cosine_ref(n, 3e-4, 9_000, 500, 3e-5, 1e-6)
        got = opt.get_last_lr()[0]  # the rate this update used
        worst = max(worst, abs(got - want) / want)
    assert worst <= 1e-12, f"worst relative error {worst:.3e}"
    # The tail is exactly min_lr: updates 9001.. use it.
    assert opt.get_last_lr()[0] == 3e-5


@pytest.mark.parametrize("backend", ["inprocess", "socket"])
@pytest.mark.parametrize(("peak", "min_lr", "total"), [(0.1, 0.001, 1000), (3e-4, 3e-5, 4321), (1.0, 0.5, 7)])
def test_matches_torch_cosine_annealing(
    backend: str,
    peak: float,
    min_lr: float,
    total: int,
    sidecar: rewarm.Sidecar,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Mapping: {kind: cosine, peak_lr: P, min_lr: m, warmup_steps: 0, total_steps: T}
    == SGD(lr=P) + CosineAnnealingLR(T_max=T, eta_min=m), stepped once per update, over T updates."""
    monkeypatch.setenv("REWARM_SOCKET", sidecar.path)
    pt = torch.nn.Parameter(torch.zeros(1))
    torch_opt = torch.optim.SGD([pt], lr=peak)
    torch_sched = torch.optim.lr_scheduler.CosineAnnealingLR(torch_opt, T_max=total, eta_min=min_lr)
    pr = torch.nn.Parameter(torch.zeros(1))
    ours = rewarm.wrap(
        torch.optim.SGD([pr], lr=0.0),
        backend=backend,
        schedule={"kind": "cosine", "peak_lr": peak, "min_lr": min_lr, "total_steps": total},
    )
    for n in range(total):
        pt.grad = torch.ones(1)
        pr.grad = torch.ones(1)
        used_by_torch = torch_opt.param_groups[0]["lr"]
        torch_opt.step()
        torch_sched.step()
        ours.step()
        assert math.isclose(ours.get_last_lr()[0], used_by_torch, rel_tol=0, abs_tol=1e-9 * peak), n
        # between steps both show the rate of the next update
        shown, torch_shown = ours.param_groups[0]["lr"], torch_opt.param_groups[0]["lr"]
        assert math.isclose(shown, torch_shown, rel_tol=0, abs_tol=1e-9 * peak), n
