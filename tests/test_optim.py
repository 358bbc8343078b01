from __future__ import annotations

import math

import pytest
import torch
from torch.optim.lr_scheduler import LRScheduler

import rewarm
from tests.reference import cosine_ref

SPEC = {
    "kind": "cosine",
    "peak_lr": 0.5,
    "min_lr": 0.05,
    "warmup_steps": 4,
    "warmup_start_lr": 0.01,
    "total_steps": 40,
}


def ref(n: int) -> float:
    return cosine_ref(n, 0.5, 40, 4, 0.05, 0.01)


def make(backend: str = "inprocess", **kw):
    model = torch.nn.Linear(3, 1)
    inner = torch.optim.SGD(
        [{"params": [model.weight]}, {"params": [model.bias], "lr_mult": 0.1}], lr=123.0, momentum=0.9
    )
    return model, rewarm.wrap(inner, schedule=SPEC, backend=backend, **kw)


def train(model: torch.nn.Module, opt: torch.optim.Optimizer, steps: int) -> list[list[float]]:
    seen = []
    for _ in range(steps):
        loss = model(torch.ones(2, 3)).pow(2).sum()
        loss.backward()
        opt.step()
        opt.zero_grad()
        seen.append([g["lr"] for g in opt.param_groups])
    return seen


@pytest.mark.parametrize("backend", ["inprocess", "socket"])
def test_lr_after_each_step_is_the_lr_that_update_used(
    backend: str, sidecar: rewarm.Sidecar, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REWARM_SOCKET", sidecar.path)
    model, opt = make(backend, window=7)  # a window that does not divide the run
    assert opt.backend == backend
    seen = train(model, opt, 50)
    for n, (lr, lr_bias) in enumerate(seen):
        assert math.isclose(lr, ref(n), rel_tol=1e-12)
        assert math.isclose(lr_bias, 0.1 * ref(n), rel_tol=1e-12)
    assert opt.steps_applied == 50


def test_inner_step_really_uses_the_rate() -> None:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = rewarm.wrap(torch.optim.SGD([p], lr=99.0), schedule=SPEC)
    for n in range(6):
        p.grad = torch.ones(1)
        before = p.item()
        opt.step()
        assert math.isclose(before - p.item(), ref(n), rel_tol=1e-6)


def test_passthrough_and_closure() -> None:
    model, opt = make()
    assert opt.param_groups is opt.optimizer.param_groups
    assert opt.state is opt.optimizer.state
    assert opt.defaults is opt.optimizer.defaults
    assert isinstance(opt, torch.optim.Optimizer)
    model(torch.ones(1, 3)).sum().backward()
    calls = []

    def closure() -> torch.Tensor:
        calls.append(1)
        return torch.tensor(3.0)

    assert opt.step(closure).item() == 3.0 and calls == [1]
    assert len(opt.state) > 0  # momentum buffers of the inner optimizer
    opt.zero_grad()
    assert model.weight.grad is None


def test_state_dict_resume_is_identical() -> None:
    model, opt = make()
    full = train(model, opt, 30)
    model2, opt2 = make()
    train(model2, opt2, 13)
    sd = opt2.state_dict()
    assert sd["rewarm"]["step"] == 13 and sd["rewarm"]["schedule"]["kind"] == "cosine"
    model3, opt3 = make()
    model3.load_state_dict(model2.state_dict())
    opt3.load_state_dict(sd)
    assert opt3.steps_applied == 13
    assert opt3.get_last_lr() == pytest.approx(full[12], rel=1e-15)
    assert train(model3, opt3, 17) == full[13:]


def test_resume_with_a_different_schedule_is_refused() -> None:
    _, opt = make()
    sd = opt.state_dict()
    inner = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    other = rewarm.wrap(inner, schedule={**SPEC, "total_steps": 80})
    with pytest.raises(ValueError, match="total_steps: 40 -> 80"):
        other.load_state_dict(sd)
    with pytest.raises(ValueError, match="not a rewarm optimizer state dict"):
        other.load_state_dict(inner.state_dict())


def test_multipliers_argument_and_new_groups() -> None:
    a = torch.nn.Parameter(torch.zeros(1))
    b = torch.nn.Parameter(torch.zeros(1))
    opt = rewarm.wrap(torch.optim.SGD([a], lr=1.0), schedule=SPEC, multipliers=[2.0])
    opt.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(2 * ref(0))
    with pytest.raises(ValueError, match="has 1 entries but the optimizer has 2"):
        opt.add_param_group({"params": [b]})
    opt2 = rewarm.wrap(torch.optim.SGD([a], lr=1.0), schedule=SPEC)
    opt2.step()
    opt2.add_param_group({"params": [b], "lr_mult": 3.0})
    opt2.step()
    assert [g["lr"] for g in opt2.param_groups] == pytest.approx([ref(1), 3 * ref(1)])


def test_wrap_rejects_bad_arguments() -> None:
    p = torch.nn.Parameter(torch.zeros(1))
    with pytest.raises(TypeError, match=r"torch\.optim\.Optimizer"):
        rewarm.wrap(object(), schedule=SPEC)  # type: ignore[arg-type]
    opt = rewarm.wrap(torch.optim.SGD([p], lr=1.0), schedule=SPEC)
    with pytest.raises(TypeError, match="already wrapped"):
        rewarm.wrap(opt, schedule=SPEC)
    with pytest.raises(rewarm.SpecError, match="total_steps"):
        rewarm.wrap(torch.optim.SGD([p], lr=1.0), schedule={"kind": "cosine", "peak_lr": 1.0})


def test_lr_scheduler_view_does_not_double_count() -> None:
    model, opt = make()
    sched = opt.lr_scheduler
    assert isinstance(sched, LRScheduler)
    assert sched is opt.lr_scheduler
    for n in range(10):
        model(torch.ones(1, 3)).sum().backward()
        opt.step()  # HF Trainer order: optimizer.step(), then scheduler.step()
        sched.step()
        opt.zero_grad()
        assert sched.last_epoch == n + 1
        # torch's convention: the rates of the next update
        assert sched.get_last_lr() == pytest.approx([ref(n + 1), 0.1 * ref(n + 1)])
    sd = sched.state_dict()
    _, opt2 = make()
    opt2.lr_scheduler.load_state_dict(sd)
    assert opt2.steps_applied == 10
    with pytest.raises(ValueError, match="step\\(epoch\\)"):
        sched.step(3)


def test_not_picklable() -> None:
    import pickle

    _, opt = make()
    with pytest.raises(TypeError, match="state_dict"):
        pickle.dumps(opt)
