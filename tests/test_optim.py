from __future__ import annotations

import math
import os
from typing import Any

import pytest
import torch
from torch.optim.lr_scheduler import LRScheduler
from torch.utils._python_dispatch import TorchDispatchMode

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
    """Run `steps` updates; returns each update's rates as its param groups show them before it."""
    seen = []
    for _ in range(steps):
        seen.append([g["lr"] for g in opt.param_groups])
        loss = model(torch.ones(2, 3)).pow(2).sum()
        loss.backward()
        opt.step()
        opt.zero_grad()
    return seen


def assert_same_optimizer_state(a: dict, b: dict) -> None:
    assert a["param_groups"] == b["param_groups"]
    assert a["state"].keys() == b["state"].keys()
    for k, st in a["state"].items():
        assert st.keys() == b["state"][k].keys()
        assert all(torch.equal(v, b["state"][k][name]) for name, v in st.items())


def record_used(opt: torch.optim.Optimizer) -> list[list[float]]:
    """The rates each inner update actually ran with (a step pre-hook of the inner optimizer)."""
    used: list[list[float]] = []
    inner = opt.optimizer if isinstance(opt, rewarm.RewarmOptimizer) else opt
    inner.register_step_pre_hook(lambda o, args, kw: used.append([float(g["lr"]) for g in o.param_groups]))
    return used


@pytest.mark.parametrize("backend", ["inprocess", "socket"])
def test_lr_between_steps_is_the_rate_the_next_update_uses(
    backend: str, sidecar: rewarm.Sidecar, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REWARM_SOCKET", sidecar.path)
    model, opt = make(backend, window=7)  # a window that does not divide the run
    assert opt.backend == backend
    used = record_used(opt)
    seen = train(model, opt, 50)
    assert seen == used
    for n, (lr, lr_bias) in enumerate(seen):
        assert math.isclose(lr, ref(n), rel_tol=1e-12)
        assert math.isclose(lr_bias, 0.1 * ref(n), rel_tol=1e-12)
    assert opt.steps_applied == 50
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([ref(50), 0.1 * ref(50)], rel=1e-12)
    assert opt.get_last_lr() == pytest.approx([ref(49), 0.1 * ref(49)], rel=1e-12)


def test_param_group_lr_follows_torch_scheduler_convention() -> None:
    """{kind: cosine, peak_lr: P, min_lr: m, total_steps: T} == SGD(lr=P) + CosineAnnealingLR(T_max=T,
    eta_min=m): before every update, both optimizers' param groups show the same rate."""
    peak, floor, total = 0.1, 0.001, 30
    pt = torch.nn.Parameter(torch.zeros(1))
    torch_opt = torch.optim.SGD([pt], lr=peak)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(torch_opt, T_max=total, eta_min=floor)
    pr = torch.nn.Parameter(torch.zeros(1))
    ours = rewarm.wrap(
        torch.optim.SGD([pr], lr=0.0),
        schedule={"kind": "cosine", "peak_lr": peak, "min_lr": floor, "total_steps": total},
    )
    used = record_used(ours)
    for n in range(total):
        want = torch_opt.param_groups[0]["lr"]
        assert math.isclose(ours.param_groups[0]["lr"], want, rel_tol=0, abs_tol=1e-9 * peak), n
        pt.grad = torch.ones(1)
        pr.grad = torch.ones(1)
        torch_opt.step()
        sched.step()
        ours.step()
        assert math.isclose(used[n][0], want, rel_tol=0, abs_tol=1e-9 * peak), n
    assert math.isclose(ours.param_groups[0]["lr"], torch_opt.param_groups[0]["lr"], abs_tol=1e-9 * peak)
    assert torch.allclose(pr, pt, rtol=0, atol=1e-9)


def test_shown_lr_is_refreshed_by_replans_and_reports() -> None:
    model, opt = make()
    used = record_used(opt)
    train(model, opt, 10)
    opt.replan("anneal", steps=4, shape="linear", min_lr=0.0)
    train(model, opt, 5)
    # from ref(10) down to 0 over 4 updates, then 0
    assert [u[0] for u in used[10:]] == pytest.approx([ref(10) * (1 - k / 4) for k in range(4)] + [0.0])
    assert opt.param_groups[0]["lr"] == 0.0
    opt.replan("new_stage", schedule={"kind": "constant", "peak_lr": 0.3})
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.3, 0.03], rel=1e-12)
    train(model, opt, 1)
    assert used[-1] == pytest.approx([0.3, 0.03], rel=1e-12)

    p = torch.nn.Parameter(torch.zeros(1))
    plateau = rewarm.wrap(
        torch.optim.SGD([p], lr=0.0),
        schedule={"kind": "plateau", "peak_lr": 1.0, "min_lr": 0.01, "patience": 0, "factor": 0.5},
    )
    used = record_used(plateau)
    q = torch.nn.Parameter(torch.zeros(1))
    torch_opt = torch.optim.SGD([q], lr=1.0)
    torch_sched = torch.optim.lr_scheduler.ReduceLROnPlateau(torch_opt, patience=0, factor=0.5, min_lr=0.01)
    torch_used = []
    for loss in (3.0, 3.0, 2.0, 2.0, 2.0):
        torch_used.append(torch_opt.param_groups[0]["lr"])
        torch_opt.step()
        torch_sched.step(loss)
        p.grad = torch.ones(1)
        plateau.step()
        plateau.report(loss)
        assert plateau.param_groups[0]["lr"] == torch_opt.param_groups[0]["lr"]
    p.grad = torch.ones(1)
    plateau.step()
    torch_used.append(torch_opt.param_groups[0]["lr"])
    assert [u[0] for u in used] == torch_used
    assert torch_used == [1.0, 1.0, 0.5, 0.5, 0.25, 0.125]  # the reports changed something


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
    with pytest.raises(rewarm.SpecError, match="total_steps: 40 -> 80") as refused:
        other.load_state_dict(sd)
    assert refused.value.field == "schedule.total_steps"
    with pytest.raises(ValueError, match="not a rewarm optimizer state dict"):
        other.load_state_dict(inner.state_dict())


def test_a_refused_schedule_names_its_first_difference_not_whole_lists() -> None:
    # A refined schedule carries thousands of norms, a stages spec its stage
    # list: the refusal names the first item that differs, not both lists.
    def wrap(spec: dict) -> rewarm.RewarmOptimizer:
        return rewarm.wrap(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), schedule=spec)

    norms = [1.0 + i / 1024 for i in range(5000)]
    was = wrap({"kind": "refined", "peak_lr": 1.0, "grad_norms": norms})
    now = wrap({"kind": "refined", "peak_lr": 1.0, "grad_norms": [*norms[:3], 9.0, *norms[4:]]})
    with pytest.raises(rewarm.SpecError, match=r"grad_norms\[3\]: 1.0029296875 -> 9(\.0)?\. ") as refused:
        now.load_state_dict(was.state_dict())
    assert refused.value.field == "schedule.grad_norms[3]" and len(str(refused.value)) < 400
    now = wrap({"kind": "refined", "peak_lr": 1.0, "grad_norms": [*norms, 1.0]})
    with pytest.raises(rewarm.SpecError, match=r"grad_norms: 5000 items -> 5001 items") as refused:
        now.load_state_dict(was.state_dict())
    assert refused.value.field == "schedule.grad_norms"
    cosine = {"kind": "cosine", "peak_lr": 1.0}
    was = wrap({"kind": "stages", "defaults": cosine, "stages": [{"steps": 10}, {"steps": 10}]})
    now = wrap({"kind": "stages", "defaults": cosine, "stages": [{"steps": 10}, {"steps": 12}]})
    with pytest.raises(rewarm.SpecError, match=r"stages\[1\]\.[a-z.]*total_steps: 10 -> 12\.") as refused:
        now.load_state_dict(was.state_dict())
    assert refused.value.field.startswith("schedule.stages[1].") and len(str(refused.value)) < 400


def test_multipliers_argument_and_new_groups() -> None:
    a = torch.nn.Parameter(torch.zeros(1))
    b = torch.nn.Parameter(torch.zeros(1))
    with pytest.raises(ValueError, match="has 2 entries but the optimizer has 1"):
        rewarm.wrap(torch.optim.SGD([a], lr=1.0), schedule=SPEC, multipliers=[2.0, 1.0])
    opt = rewarm.wrap(torch.optim.SGD([a], lr=1.0), schedule=SPEC, multipliers=[2.0])
    assert opt.param_groups[0]["lr"] == pytest.approx(2 * ref(0))
    opt.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(2 * ref(1))
    opt2 = rewarm.wrap(torch.optim.SGD([a], lr=1.0), schedule=SPEC)
    opt2.step()
    opt2.add_param_group({"params": [b], "lr_mult": 3.0})
    assert [g["lr"] for g in opt2.param_groups] == pytest.approx([ref(1), 3 * ref(1)])
    opt2.step()
    assert [g["lr"] for g in opt2.param_groups] == pytest.approx([ref(2), 3 * ref(2)])


def test_wrap_arguments_become_group_keys_that_can_change_and_are_saved() -> None:
    a = torch.nn.Parameter(torch.zeros(1))
    opt = rewarm.wrap(torch.optim.SGD([a], lr=1.0), schedule=SPEC, multipliers=[2.0])
    assert opt.param_groups[0]["lr_mult"] == 2.0
    opt.step()
    opt.param_groups[0]["lr_mult"] = 0.5  # a change mid-run applies from the next update
    opt.step()
    assert opt.get_last_lr() == pytest.approx([0.5 * ref(1)])
    # The keys travel with the param groups: a run wrapped without arguments resumes them.
    sd = opt.state_dict()
    other = rewarm.wrap(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), schedule=SPEC)
    other.load_state_dict(sd)
    assert other.param_groups[0]["lr"] == pytest.approx(0.5 * ref(2))
    # A checkpoint without the keys (made before wrap wrote them) gets wrap's values back.
    del sd["param_groups"][0]["lr_mult"]
    again = rewarm.wrap(
        torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), schedule=SPEC, multipliers=[2.0]
    )
    again.load_state_dict(sd)
    assert again.param_groups[0]["lr"] == pytest.approx(2.0 * ref(2))
    # The same through the inner optimizer and load_rewarm_state (DCP's recipe).
    dcp = rewarm.wrap(
        torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), schedule=SPEC, multipliers=[2.0]
    )
    dcp.optimizer.load_state_dict({k: v for k, v in sd.items() if k != "rewarm"})
    assert "lr_mult" not in dcp.param_groups[0]
    dcp.load_rewarm_state(sd["rewarm"])
    assert dcp.param_groups[0]["lr_mult"] == 2.0 and dcp.param_groups[0]["lr"] == pytest.approx(2.0 * ref(2))
    # groups= writes the fields it names; a key the group holds with another value is refused.
    g = rewarm.wrap(
        torch.optim.SGD([{"params": [a], "lr_mult": 3.0}], lr=1.0),
        schedule=SPEC,
        groups=[{"min_lr": 0.005, "peak_lr": 0.05}],
    )
    assert (g.param_groups[0]["rewarm_min_lr"], g.param_groups[0]["rewarm_peak_lr"]) == (0.005, 0.05)
    assert g.param_groups[0]["lr"] == pytest.approx(3.0 * (0.005 + (ref(0) - 0.05) * 0.045 / 0.45))
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['lr_mult'\] = 3.0, but multipliers\[0\] sets"):
        rewarm.wrap(
            torch.optim.SGD([{"params": [a], "lr_mult": 3.0}], lr=1.0), schedule=SPEC, multipliers=[2.0]
        )
    same = rewarm.wrap(
        torch.optim.SGD([{"params": [a], "lr_mult": 2.0}], lr=1.0), schedule=SPEC, multipliers=[2]
    )
    assert same.param_groups[0]["lr"] == pytest.approx(2.0 * ref(0))


@pytest.mark.parametrize("fixed", [{"multipliers": [2.0]}, {"groups": [{"multiplier": 2.0}]}, {}])
def test_add_param_group_checks_first_and_carries_its_multiplier(fixed: dict) -> None:
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    mult_a = 2.0 if fixed else 1.0
    opt = rewarm.wrap(torch.optim.SGD([a], lr=1.0), schedule=SPEC, **fixed)
    used = record_used(opt)
    opt.step()
    with pytest.raises(
        rewarm.SpecError, match=r"groups\[1\]\.multiplier = -1.*\(the param-group key lr_mult\)"
    ):
        opt.add_param_group({"params": [b], "lr_mult": -1.0})
    with pytest.raises(ValueError, match="param group 1: lr_mult='x': must be a number"):
        opt.add_param_group({"params": [b], "lr_mult": "x"})
    # float() would take these; a rate key must be a number, as multipliers= must.
    for v in ("0.5", True, torch.ones(2)):
        with pytest.raises(rewarm.SpecError, match=r"param group 1: lr_mult=.*must be a number"):
            opt.add_param_group({"params": [b], "lr_mult": v})
    with pytest.raises(rewarm.SpecError, match=r"groups\[1\]\.min_lr = 2: must be <= its peak_lr"):
        opt.add_param_group({"params": [b], "rewarm_min_lr": 2.0, "rewarm_peak_lr": 1.0})
    with pytest.raises(ValueError, match="more than one parameter group"):  # torch's own check
        opt.add_param_group({"params": [a], "lr_mult": 3.0})
    assert len(opt.param_groups) == 1 and len(opt.optimizer.param_groups) == 1
    opt.step()  # still works
    opt.add_param_group({"params": [b], "lr_mult": 3.0})
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([mult_a * ref(2), 3 * ref(2)])
    a.grad, b.grad = torch.ones(1), torch.ones(1)
    opt.step()
    assert used[-1] == pytest.approx([mult_a * ref(2), 3 * ref(2)])
    assert [a.item(), b.item()] == pytest.approx([-mult_a * ref(2), -3 * ref(2)])
    assert opt.steps_applied == 3


def test_group_range_stays_non_negative_and_refuses_crossed_ends() -> None:
    # SPEC warms up from 0.01, below its min_lr 0.05: a group range [0.001, 0.1]
    # takes the schedule's [0.05, 0.5] affinely and what lies below 0.05 in
    # proportion, onto [0, 0.001].
    def group(v: float) -> float:
        return 0.001 * v / 0.05 if v < 0.05 else 0.001 + (v - 0.05) * (0.1 - 0.001) / (0.5 - 0.05)

    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = rewarm.wrap(
        torch.optim.SGD(
            [{"params": [a]}, {"params": [b], "rewarm_min_lr": 0.001, "rewarm_peak_lr": 0.1}], lr=1.0
        ),
        schedule=SPEC,
    )
    for n in range(41):
        assert opt.param_groups[1]["lr"] == pytest.approx(group(ref(n)), rel=1e-12, abs=0)
        assert opt.param_groups[1]["lr"] >= 0
        opt.step()
    # One end only, crossing the schedule's other end: refused, naming it.
    c = torch.nn.Parameter(torch.zeros(1))
    with pytest.raises(
        rewarm.SpecError, match=r"groups\[2\]\.min_lr = 2: crosses the schedule's peak_lr \(0\.5\)"
    ):
        opt.add_param_group({"params": [c], "rewarm_min_lr": 2.0})
    with pytest.raises(
        rewarm.SpecError, match=r"groups\[1\]\.peak_lr = 0\.01: crosses the schedule's min_lr \(0\.05\)"
    ):
        rewarm.wrap(
            torch.optim.SGD([{"params": [a]}, {"params": [c], "rewarm_peak_lr": 0.01}], lr=1.0), schedule=SPEC
        )


def test_group_settings_that_would_do_nothing_are_warned_about() -> None:
    import warnings

    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    # torch-style per-group lr: replaced by the schedule, so say so.
    with pytest.warns(UserWarning, match=r"different lr \(0\.0001, 0\.001\).*lr_mult"):
        opt = rewarm.wrap(
            torch.optim.SGD([{"params": [a], "lr": 1e-4}, {"params": [b]}], lr=1e-3), schedule=SPEC
        )
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([ref(0), ref(0)])
    # wd_mult with no weight_decay schedule does nothing.
    with pytest.warns(
        UserWarning, match=r"param group\(s\) \[1\] set wd_mult, but the schedule has no weight_decay"
    ):
        rewarm.wrap(
            torch.optim.SGD([{"params": [a]}, {"params": [b], "wd_mult": 0.0}], lr=1.0), schedule=SPEC
        )
    # Neither warns where the keys do their work.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rewarm.wrap(
            torch.optim.SGD([{"params": [a], "lr": 1e-4}, {"params": [b]}], lr=1e-3),
            schedule=SPEC,
            multipliers=[0.1, 1.0],
        )
        rewarm.wrap(
            torch.optim.SGD([{"params": [a]}, {"params": [b], "wd_mult": 0.0}], lr=1.0),
            schedule={**SPEC, "weight_decay": {"start": 0.1}},
        )
        plain = rewarm.wrap(torch.optim.SGD([a], lr=1.0), schedule=SPEC)
    # One keyed group does not hide two unkeyed ones whose lr differ.
    c = torch.nn.Parameter(torch.zeros(1))
    with pytest.warns(UserWarning, match=r"different lr \(1e-05, 0\.0001\)"):
        rewarm.wrap(
            torch.optim.SGD(
                [{"params": [a], "lr": 1e-4}, {"params": [b], "lr": 1e-5}, {"params": [c], "lr_mult": 0.01}],
                lr=1e-3,
            ),
            schedule=SPEC,
        )
    # A weight_decay schedule replaces a no-decay group's 0 unless wd_mult says otherwise.
    wd_spec = {**SPEC, "weight_decay": {"start": 0.1}}
    with pytest.warns(UserWarning, match=r"different weight_decay \(0, 0\.1\) and no wd_mult"):
        rewarm.wrap(
            torch.optim.AdamW([{"params": [a], "weight_decay": 0.0}, {"params": [b]}], weight_decay=0.1),
            schedule=wd_spec,
        )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rewarm.wrap(
            torch.optim.AdamW(
                [{"params": [a], "weight_decay": 0.0, "wd_mult": 0.0}, {"params": [b]}], weight_decay=0.1
            ),
            schedule=wd_spec,
        )
    # A group added later with its own lr is told too.
    with pytest.warns(UserWarning, match="different lr"):
        plain.add_param_group({"params": [b], "lr": 5.0})


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


def test_the_scheduler_view_follows_a_restore_through_the_optimizer() -> None:
    model, opt = make()
    train(model, opt, 5)
    sd = opt.state_dict()
    _, opt2 = make()
    view = opt2.lr_scheduler  # created before the restore, as a framework does
    opt2.load_state_dict(sd)
    assert view.last_epoch == 5
    assert view.get_last_lr() == pytest.approx([ref(5), 0.1 * ref(5)])


def test_saved_state_is_a_copy() -> None:
    # Editing a saved state dict (or the schedule property) must not reach
    # the running wrapper, nor an earlier checkpoint through it.
    model, opt = make()
    st = opt.rewarm_state()
    st["groups"][1]["multiplier"] = 100.0
    st["schedule"]["peak_lr"] = 9.0
    opt.schedule["total_steps"] = 1
    spec = {"kind": "multistep", "peak_lr": 1.0, "milestones": [3, 7], "gamma": 0.5}
    m2 = torch.nn.Linear(3, 1)
    opt2 = rewarm.wrap(torch.optim.SGD(m2.parameters(), lr=1.0), schedule=spec, backend="inprocess")
    saved = opt2.state_dict()
    opt2.state_dict()["rewarm"]["schedule"]["milestones"].append(9)
    opt2.load_state_dict(saved)  # refused if the append had reached the wrapper's spec
    assert opt2.schedule["milestones"] == [3, 7]
    assert train(model, opt, 6) == [
        pytest.approx([ref(n), 0.1 * ref(n)]) for n in range(6)
    ]  # still lr_mult 0.1 and the spec's own peak


def test_a_checkpoint_group_key_error_names_the_param_group_key() -> None:
    _, opt = make()
    sd = opt.state_dict()
    sd["param_groups"][1]["lr_mult"] = -1.0
    _, opt2 = make()
    with pytest.raises(rewarm.SpecError, match=r"the param-group key lr_mult"):
        opt2.load_state_dict(sd)


def test_state_dict_after_close_says_why() -> None:
    model, opt = make()
    train(model, opt, 2)
    opt.close()
    with pytest.raises(rewarm.SessionNotFound, match=r"closed \(close\(\)\).*before closing"):
        opt.state_dict()


def test_not_picklable() -> None:
    import pickle

    _, opt = make()
    with pytest.raises(TypeError, match="state_dict"):
        pickle.dumps(opt)


def test_groups_sharing_one_lr_tensor_each_get_their_rate() -> None:
    # torch puts a tensor lr given to the constructor into every group, as one object
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    inner = torch.optim.SGD([{"params": [a]}, {"params": [b], "lr_mult": 0.1}], lr=torch.tensor(0.5))
    assert inner.param_groups[0]["lr"] is inner.param_groups[1]["lr"]
    opt = rewarm.wrap(inner, schedule={"kind": "constant", "peak_lr": 1e-3})
    used = []
    inner.register_step_pre_hook(lambda o, *_: used.append([float(g["lr"]) for g in o.param_groups]))
    for _ in range(3):
        a.grad, b.grad = torch.ones(2), torch.ones(2)
        opt.step()
    assert used == [[pytest.approx(1e-3, rel=1e-6), pytest.approx(1e-4, rel=1e-6)]] * 3  # float32 tensors
    assert a.tolist() == pytest.approx([-3e-3] * 2, rel=1e-6)
    assert b.tolist() == pytest.approx([-3e-4] * 2, rel=1e-6)


def test_tensor_lr_stays_the_same_tensor() -> None:
    # torch's schedulers update a tensor lr in place (fill_), so fused/capturable steps keep reading it
    q = torch.nn.Parameter(torch.zeros(2))
    torch_lr = torch.tensor(0.01)
    torch_opt = torch.optim.Adam([q], lr=torch_lr)
    torch_sched = torch.optim.lr_scheduler.LambdaLR(torch_opt, lambda n: 0.5)
    q.grad = torch.ones(2)
    torch_opt.step()
    torch_sched.step()
    assert torch_opt.param_groups[0]["lr"] is torch_lr

    a = torch.nn.Parameter(torch.zeros(2))
    lr = torch.tensor(0.01, dtype=torch.float64)
    spec = {**SPEC, "momentum": {"start": 0.9, "end": 0.8, "shape": "linear", "steps": 10}}
    betas = (torch.tensor(0.9, dtype=torch.float64), torch.tensor(0.999, dtype=torch.float64))
    opt = rewarm.wrap(torch.optim.Adam([a], lr=lr, betas=betas), schedule=spec)
    for n in range(5):
        group = opt.param_groups[0]
        assert group["lr"] is lr and group["betas"][0] is betas[0]
        assert lr.item() == pytest.approx(ref(n), rel=1e-12)
        assert betas[0].item() == pytest.approx(0.9 - 0.1 * n / 10, rel=1e-12)
        a.grad = torch.ones(2)
        opt.step()
    # only the rate scheduled (step()'s fast path once Adam has state), window edges included
    lr2 = torch.tensor(0.0, dtype=torch.float64)
    opt2 = rewarm.wrap(torch.optim.Adam([a], lr=lr2), schedule=SPEC, window=3)
    used = record_used(opt2)
    for n in range(8):
        assert opt2.param_groups[0]["lr"] is lr2 and lr2.item() == pytest.approx(ref(n), rel=1e-12)
        a.grad = torch.ones(2)
        opt2.step()
    assert [u[0] for u in used] == pytest.approx([ref(n) for n in range(8)], rel=1e-12)


def test_state_dict_hooks_run() -> None:
    model, opt = make()
    train(model, opt, 3)
    calls: list[tuple] = []
    opt.register_state_dict_pre_hook(lambda o: calls.append(("pre", o)))
    handle = opt.register_state_dict_post_hook(lambda o, sd: {**sd, "note": "hi"})
    sd = opt.state_dict()
    assert calls == [("pre", opt)] and sd["note"] == "hi" and sd["rewarm"]["step"] == 3
    handle.remove()
    assert "note" not in opt.state_dict()

    _, opt2 = make()

    def pre_load(o: torch.optim.Optimizer, sd: dict) -> dict:
        calls.append(("load pre", o, sd.pop("note")))
        return sd

    opt2.register_load_state_dict_pre_hook(pre_load)
    opt2.register_load_state_dict_post_hook(lambda o: calls.append(("load post", o, o.steps_applied)))
    opt2.load_state_dict(sd)
    assert calls[-2:] == [("load pre", opt2, "hi"), ("load post", opt2, 3)]


def test_failed_load_changes_nothing() -> None:
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    two = rewarm.wrap(torch.optim.SGD([{"params": [a]}, {"params": [b]}], lr=0.0), schedule=SPEC)
    for _ in range(7):
        two.step()
    two_groups = two.state_dict()
    two_params = rewarm.wrap(torch.optim.SGD([a, b], lr=0.0), schedule=SPEC).state_dict()
    other = rewarm.wrap(torch.optim.SGD([a], lr=0.0, momentum=0.9), schedule=SPEC)
    for _ in range(7):
        a.grad = torch.ones(1)
        other.step()
    good = other.state_dict()
    bad_format = {**good, "rewarm": {**good["rewarm"], "format": 99}}
    bad_norms = {**good, "rewarm": {**good["rewarm"], "grad_norms": ["x"]}}
    other_schedule = rewarm.wrap(torch.optim.SGD([a], lr=0.0), schedule={**SPEC, "total_steps": 80})
    other_schedule.step()

    c = torch.nn.Parameter(torch.zeros(1))
    one = rewarm.wrap(torch.optim.SGD([c], lr=0.0, momentum=0.9), schedule=SPEC, track_grad_norm="l2")
    for _ in range(3):
        c.grad = torch.ones(1)
        one.step()
    before = (one.optimizer.state_dict(), list(one.grad_norms), one.get_last_lr())
    for sd, match in [
        (two_groups, "param_groups has 2 groups, but this optimizer has 1"),
        (two_params, r"param_groups\[0\] has 2 params, but this optimizer's group 0 has 1"),
        (bad_format, "rewarm state format 99"),
        (bad_norms, r"grad_norms=\['x'\]: expected a list of numbers"),
        (other_schedule.state_dict(), "total_steps: 80 -> 40"),
        ({"state": {}, "param_groups": []}, "not a rewarm optimizer state dict"),
    ]:
        with pytest.raises(ValueError, match=match):
            one.load_state_dict(sd)
        assert one.steps_applied == 3
        assert one.param_groups[0]["lr"] == pytest.approx(ref(3), rel=1e-12)
        assert (one.optimizer.state_dict(), list(one.grad_norms), one.get_last_lr()) == before
    c.grad = torch.ones(1)
    used = record_used(one)
    one.step()
    assert used == [[pytest.approx(ref(3), rel=1e-12)]] and one.steps_applied == 4
    one.load_state_dict(good)  # and a good one still loads
    assert one.steps_applied == 7 and one.grad_norms == []


def test_grad_norms_survive_a_checkpoint() -> None:
    import io

    p = torch.nn.Parameter(torch.zeros(4))
    opt = rewarm.wrap(torch.optim.SGD([p], lr=0.0), schedule=SPEC, track_grad_norm="l2")
    for k in range(5):
        p.grad = torch.full((4,), k + 1.0)
        opt.step()
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    sd = torch.load(buf, weights_only=True)
    opt2 = rewarm.wrap(torch.optim.SGD([p], lr=0.0), schedule=SPEC, track_grad_norm="l2")
    opt2.load_state_dict(sd)
    assert opt2.grad_norms == [2.0 * (k + 1) for k in range(5)]  # |(v, v, v, v)|_2 = 2v
    p.grad = torch.full((4,), 10.0)
    opt2.step()
    assert opt2.grad_norms == [2.0, 4.0, 6.0, 8.0, 10.0, 20.0]
    spec = rewarm.refined_spec(opt2.grad_norms, peak_lr=0.1)  # a whole run's norms
    assert spec["grad_norms"] == opt2.grad_norms and spec["kind"] == "refined"


@pytest.mark.parametrize("scheduled_wd", [False, True])  # step()'s fast path, and its slow one
def test_grad_norms_hold_one_entry_per_update(scheduled_wd: bool) -> None:
    # grad_norms[k] is update k+1's: NaN where no parameter had a gradient, so the
    # list keeps lining up with the updates (a refined schedule drops NaN norms).
    p = torch.nn.Parameter(torch.zeros(4))
    spec = {**SPEC, "weight_decay": {"start": 0.0}} if scheduled_wd else SPEC
    opt = rewarm.wrap(torch.optim.SGD([p], lr=0.0), schedule=spec, track_grad_norm="l1")
    for k in range(6):
        if k % 2:
            p.grad = torch.full((4,), float(k))
        else:
            opt.zero_grad()  # no gradient at all for this update
        opt.step()
    assert opt.steps_applied == len(opt.grad_norms) == 6
    assert [math.isnan(x) for x in opt.grad_norms[::2]] == [True] * 3
    assert opt.grad_norms[1::2] == [4.0, 12.0, 20.0]  # |(k, k, k, k)|_1
    # The NaN norms are dropped: the schedule is that of the real ones alone,
    # over the run's 12 updates.
    norms = opt.grad_norms * 2
    real = {"kind": "refined", "peak_lr": 0.1, "grad_norms": [x for x in norms if not math.isnan(x)]}
    got = rewarm.preview(rewarm.refined_spec(norms, peak_lr=0.1), list(range(13)))["lr"]
    assert got == rewarm.preview({**real, "total_steps": 12}, list(range(13)))["lr"] and got[0] > 0


def test_the_grad_norm_is_taken_per_device_and_combined() -> None:
    # torch's foreach ops take one device's tensors only: the norm is taken per
    # device and the parts combined on the first gradient's device. A meta
    # tensor stands in for a second device.
    from rewarm._optim import _norms_by_device, _total_norm

    torch.manual_seed(0)
    cpu = [torch.randn(3), torch.randn(2, 2), torch.randn(()), torch.randn(5)]
    flat = torch.cat([g.reshape(-1) for g in cpu])
    for ord in (1.0, 2.0, math.inf):
        want = torch.linalg.vector_norm(flat, ord).item()
        assert _total_norm(cpu, ord).item() == pytest.approx(want, rel=1e-6)
        assert _norms_by_device(cpu, ord)[torch.device("cpu")].item() == pytest.approx(want, rel=1e-6)
    meta = [torch.empty(4, device="meta"), torch.empty(2, 3, device="meta")]
    mixed = [cpu[0], meta[0], cpu[1], cpu[2], meta[1], cpu[3]]
    for ord in (1.0, 2.0, math.inf):
        parts = _norms_by_device(mixed, ord)
        assert list(parts) == [torch.device("cpu"), torch.device("meta")]
        assert parts[torch.device("cpu")].item() == pytest.approx(
            torch.linalg.vector_norm(flat, ord).item(), rel=1e-6
        )
        assert parts[torch.device("meta")].shape == ()
        total = _total_norm(mixed[1:], ord)  # the CPU part is moved to the first device, meta
        assert total.device.type == "meta" and total.shape == ()


def test_track_grad_norm_with_gradients_on_two_devices_counts_the_update() -> None:
    # A model split over devices: the update is applied, so it is counted, and the
    # norm that cannot be read (a meta tensor has no data) is recorded as NaN.
    import warnings

    a = torch.nn.Parameter(torch.zeros(2))
    b = torch.nn.Parameter(torch.zeros(2, device="meta"))
    opt = rewarm.wrap(torch.optim.SGD([a, b], lr=0.0), schedule=SPEC, track_grad_norm="l2")
    a.grad, b.grad = torch.ones(2), torch.ones(2, device="meta")
    with pytest.warns(RuntimeWarning, match="gradient norm could not be computed"):
        opt.step()
    assert opt.steps_applied == 1 and opt.get_last_lr() == pytest.approx([ref(0)])
    assert a.tolist() == pytest.approx([-ref(0)] * 2)
    assert opt.param_groups[0]["lr"] == pytest.approx(ref(1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once
        opt.step()
    assert opt.steps_applied == 2 and len(opt.grad_norms) == 2
    assert all(math.isnan(x) for x in opt.grad_norms)


def test_group_keys_changed_mid_run_apply_from_the_next_update() -> None:
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    sgd = torch.optim.SGD([{"params": [a]}, {"params": [b], "lr_mult": 1.0}], lr=0.0, momentum=0.9)
    opt = rewarm.wrap(sgd, schedule=SPEC)
    used = record_used(opt)
    for _ in range(5):
        a.grad, b.grad = torch.ones(1), torch.ones(1)  # momentum state: step()'s fast path
        opt.step()
    opt.param_groups[1]["lr_mult"] = 0.5
    opt.step()
    assert used[-1] == pytest.approx([ref(5), 0.5 * ref(5)], rel=1e-12)
    assert opt.lrs_at(6) == pytest.approx([ref(6), 0.5 * ref(6)], rel=1e-12)
    # the schedule's own [min_lr, peak_lr] = [0.05, 0.5] mapped affinely onto [0, 1]
    opt.param_groups[0]["rewarm_min_lr"] = 0.0
    opt.param_groups[0]["rewarm_peak_lr"] = 1.0
    opt.step()
    assert used[-1] == pytest.approx([(ref(6) - 0.05) / 0.45, 0.5 * ref(6)], rel=1e-12)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([(ref(7) - 0.05) / 0.45, 0.5 * ref(7)])
    del opt.param_groups[1]["lr_mult"]
    opt.step()
    assert used[-1] == pytest.approx([(ref(7) - 0.05) / 0.45, ref(7)], rel=1e-12)


def test_state_dict_layout_is_torchs_plus_rewarm() -> None:
    import io

    model, opt = make()
    train(model, opt, 5)
    sd = opt.state_dict()
    assert set(sd) == {"state", "param_groups", "rewarm"}
    # torch's own optimizer loads it as its own state dict
    plain = torch.optim.SGD([{"params": [model.weight]}, {"params": [model.bias]}], lr=1.0, momentum=0.9)
    plain.load_state_dict(sd)
    assert_same_optimizer_state(plain.state_dict(), opt.optimizer.state_dict())
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)
    full = train(*make(), 12)
    model2, opt2 = make()
    model2.load_state_dict(model.state_dict())
    opt2.load_state_dict(loaded)
    assert opt2.steps_applied == 5
    assert_same_optimizer_state(opt2.optimizer.state_dict(), opt.optimizer.state_dict())
    assert train(model2, opt2, 7) == full[5:]


def test_nested_checkpoints_of_earlier_versions_still_load() -> None:
    model, opt = make()
    full = train(model, opt, 12)
    model2, opt2 = make()
    train(model2, opt2, 5)
    # the layout state_dict() had before 'state'/'param_groups' moved to the top
    old = {"optimizer": opt2.optimizer.state_dict(), "rewarm": opt2.rewarm_state()}
    del old["rewarm"]["grad_norms"]
    model3, opt3 = make()
    model3.load_state_dict(model2.state_dict())
    opt3.load_state_dict(old)
    assert opt3.steps_applied == 5
    assert_same_optimizer_state(opt3.optimizer.state_dict(), opt2.optimizer.state_dict())
    assert train(model3, opt3, 7) == full[5:]


@pytest.fixture
def gloo(tmp_path):  # type: ignore[no-untyped-def]
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


@pytest.mark.usefixtures("gloo")
def test_distributed_checkpoint(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        get_optimizer_state_dict,
        get_state_dict,
        set_optimizer_state_dict,
        set_state_dict,
    )

    def build() -> tuple[torch.nn.Module, rewarm.RewarmOptimizer]:
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 2)
        return model, rewarm.wrap(
            torch.optim.AdamW(model.parameters(), lr=0.0, weight_decay=0.5),
            schedule=SPEC,
            track_grad_norm="l2",
        )

    # A fresh optimizer: DCP creates its state with a step at lr 0 and zero gradients; that
    # step must not run at the schedule's rate (AdamW would decay the weights) nor count.
    model, opt = build()
    weights = [p.detach().clone() for p in model.parameters()]
    osd = get_optimizer_state_dict(model, opt)
    assert set(osd) == {"state", "param_groups"} and set(osd["state"]) == {"weight", "bias"}
    assert opt.steps_applied == 0 and opt.param_groups[0]["lr"] == pytest.approx(ref(0))
    assert all(torch.equal(w, p) for w, p in zip(weights, model.parameters(), strict=True))

    full = train(*build(), 12)
    train(model, opt, 5)
    msd, osd = get_state_dict(model, opt)
    dcp.save({"model": msd, "optim": osd, "rewarm": opt.rewarm_state()}, checkpoint_id=tmp_path / "ck")

    model2, opt2 = build()
    msd2, osd2 = get_state_dict(model2, opt2)
    sd = {"model": msd2, "optim": osd2, "rewarm": opt2.rewarm_state()}
    dcp.load(sd, checkpoint_id=tmp_path / "ck")
    # DCP keeps only 'state' and 'param_groups': the wrapper refuses them without the schedule
    with pytest.raises(ValueError, match=r"set_optimizer_state_dict\(model, wrapped\.optimizer"):
        set_optimizer_state_dict(model2, opt2, sd["optim"])
    set_state_dict(model2, opt2.optimizer, model_state_dict=sd["model"], optim_state_dict=sd["optim"])
    opt2.load_rewarm_state(sd["rewarm"])
    assert opt2.steps_applied == 5 and opt2.grad_norms == opt.grad_norms
    assert opt2.param_groups[0]["lr"] == pytest.approx(ref(5), rel=1e-12)
    assert train(model2, opt2, 7) == full[5:]
    train(model, opt, 7)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), model2.parameters(), strict=True))


def test_compiled_step_counts_every_update_without_recompiling() -> None:
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    a = torch.nn.Parameter(torch.zeros(8))
    lr = torch.tensor(0.0)  # a tensor lr, so that torch's own step does not recompile per rate
    opt = rewarm.wrap(torch.optim.Adam([a], lr=lr), schedule=SPEC)
    used = record_used(opt)
    step = torch.compile(opt.step, backend="eager")
    for k in range(12):
        a.grad = torch.ones(8)
        step()
        if k == 2:
            frames = counters["frames"]["total"]
    assert counters["frames"]["total"] == frames  # nothing compiled after the third update
    assert opt.steps_applied == 12 and opt.param_groups[0]["lr"] is lr
    assert [u[0] for u in used] == pytest.approx([ref(n) for n in range(12)], rel=1e-6)
    assert lr.item() == pytest.approx(ref(12), rel=1e-6)
    assert counters["stats"]["unique_graphs"] <= 2
    torch._dynamo.reset()


_COMPILED_CALLER = """
import json, sys, warnings
import torch, rewarm
from torch._dynamo.utils import counters

spec = json.loads(sys.argv[1])
a = torch.nn.Parameter(torch.zeros(8))
# A tensor lr, as torch advises under compile (a float one recompiles torch's own step per rate).
opt = rewarm.wrap(torch.optim.SGD([a], lr=torch.tensor(0.0)), schedule=spec)
used = []
opt.optimizer.register_step_pre_hook(lambda o, args, kw: used.append(float(o.param_groups[0]["lr"])))


graphs = []


def backend(gm, example_inputs):
    graphs.append(gm)
    return gm


@torch.compile(backend=backend)
def train_step():
    a.grad = torch.ones(8)
    opt.step()


warnings.simplefilter("error")  # a false "lr set outside rewarm" warning fails the run
frames = []
for k in range(12):
    train_step()
    frames.append(counters["frames"]["total"])
inner = any("param_groups" in str(n.target) for g in graphs for n in g.graph.nodes)  # SGD's update, compiled
print(json.dumps({"used": used, "n": opt.steps_applied, "frames": frames, "inner_compiled": inner}))
"""


def test_a_compiled_function_that_calls_step_compiles_nothing_per_update() -> None:
    # @torch.compile over a function that calls opt.step(): the step runs
    # after a graph break, beside dynamo, and its bookkeeping frames were
    # compiled one by one, each specialising on the counter: a recompile per
    # update until dynamo's limit (falling back to eager), and a false "lr
    # set outside rewarm" warning. A fresh process, so that no earlier
    # compile in this one decides what dynamo does.
    import json
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-c", _COMPILED_CALLER, json.dumps(SPEC)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["n"] == 12
    assert out["used"] == pytest.approx([ref(n) for n in range(12)], rel=1e-6)
    assert out["frames"][-1] == out["frames"][2], out["frames"]  # nothing compiled after the third update
    assert out["inner_compiled"]  # the inner step is still compiled, as under torch.compile(opt.step)


def test_step_hooks_get_the_wrapper_and_see_the_update_counted() -> None:
    import io

    model, opt = make()
    seen: list[tuple[str, bool, int]] = []
    saved: dict[int, bytes] = {}

    def pre(o, args, kwargs):
        seen.append(("pre", o is opt and args == (opt,) and kwargs == {}, o.steps_applied))

    def post(o, args, kwargs):
        seen.append(("post", o is opt and args == (opt,) and kwargs == {}, o.steps_applied))
        assert o.get_last_lr() == pytest.approx([ref(o.steps_applied - 1), 0.1 * ref(o.steps_applied - 1)])
        buf = io.BytesIO()
        torch.save({"model": model.state_dict(), "opt": o.state_dict()}, buf)  # a checkpoint hook
        saved[o.steps_applied] = buf.getvalue()

    h_pre, h_post = opt.register_step_pre_hook(pre), opt.register_step_post_hook(post)
    full = train(model, opt, 8)
    assert seen[:4] == [("pre", True, 0), ("post", True, 1), ("pre", True, 1), ("post", True, 2)]
    h_pre.remove()
    h_post.remove()
    train(model, opt, 1)
    assert len(seen) == 16
    # The checkpoint written in the post hook after update 5 resumes at update 6.
    model2, opt2 = make()
    ck = torch.load(io.BytesIO(saved[5]), weights_only=True)
    model2.load_state_dict(ck["model"])
    opt2.load_state_dict(ck["opt"])
    assert opt2.steps_applied == 5
    assert train(model2, opt2, 3) == full[5:8]
    # A pre-hook may replace the arguments, as torch's do; args without the
    # optimizer in front (rewarm's earlier form) are still taken as step()'s own,
    # and later hooks get them with the optimizer in front.
    calls = []
    later: list[tuple[tuple, dict]] = []
    closure = lambda: calls.append(1) or 0.0  # noqa: E731
    opt2.register_step_pre_hook(lambda o, args, kwargs: ((), {"closure": closure}))
    opt2.register_step_post_hook(lambda o, args, kwargs: later.append((args, kwargs)))
    opt2.step()
    assert calls == [1] and opt2.steps_applied == 9 and later == [((opt2,), {"closure": closure})]
    opt2.register_step_pre_hook(lambda o, args, kwargs: "no")
    with pytest.raises(RuntimeError, match="pre-hook must return None or"):
        opt2.step()


@pytest.mark.parametrize("compiled", [False, True])
def test_a_torch_style_step_hook_works_on_the_wrapper_as_on_torch(compiled: bool) -> None:
    # torch calls hook(opt, args, kwargs) with args = (opt, *step's args), and a
    # pre-hook's new args start with the optimizer too.
    def run(wrapped: bool) -> tuple[list[float], list[float], list[Any]]:
        p = torch.nn.Parameter(torch.zeros(1))
        opt: torch.optim.Optimizer = torch.optim.SGD([p], lr=0.1)
        if wrapped:
            opt = rewarm.wrap(opt, schedule={"kind": "constant", "peak_lr": 0.1})
        seen: list[Any] = []

        def closure() -> torch.Tensor:
            seen.append("closure")
            p.grad = torch.ones(1)
            return torch.tensor(3.0)

        def name(a: Any) -> str:
            return "opt" if a is opt else "closure" if a is closure else repr(a)

        opt.register_step_pre_hook(
            lambda o, args, kwargs: seen.append(("pre", name(o), [name(a) for a in args]))
        )
        opt.register_step_pre_hook(lambda o, args, kwargs: ((args[0], closure), kwargs))
        opt.register_step_post_hook(
            lambda o, args, kwargs: seen.append(("post", [name(a) for a in args], kwargs))
        )
        step = torch.compile(opt.step, backend="eager") if compiled else opt.step
        losses = [float(step()), float(step(closure))]
        return losses, [p.item()], seen

    torch._dynamo.reset()
    once = [("pre", "opt", ["opt"]), "closure", ("post", ["opt", "closure"], {})]
    again = [("pre", "opt", ["opt", "closure"]), "closure", ("post", ["opt", "closure"], {})]
    expected = ([3.0, 3.0], [pytest.approx(-0.2)], once + again)
    assert run(wrapped=False) == expected
    assert run(wrapped=True) == expected
    torch._dynamo.reset()


def test_a_groupspec_sets_only_the_fields_it_gives() -> None:
    # GroupSpec(multiplier=...) leaves wd_mult out: nothing is written into a
    # no-decay group's wd_mult 0 (nor refused), as with a dict that leaves the
    # key out; the fields it does give are written and checked.
    spec = {**SPEC, "weight_decay": {"start": 0.1}}
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))

    def inner() -> torch.optim.Optimizer:
        return torch.optim.AdamW([{"params": [a]}, {"params": [b], "wd_mult": 0.0}], lr=0.0)

    for groups in (
        [rewarm.GroupSpec(multiplier=0.5), rewarm.GroupSpec(multiplier=2.0)],
        [{"multiplier": 0.5}, {"multiplier": 2.0}],
    ):
        opt = rewarm.wrap(inner(), schedule=spec, groups=groups)
        assert [(g.get("lr_mult"), g.get("wd_mult")) for g in opt.param_groups] == [(0.5, None), (2.0, 0.0)]
        assert opt.lrs_at(0) == pytest.approx([0.5 * ref(0), 2.0 * ref(0)], rel=1e-12)
        assert opt.weight_decay_at(0) == pytest.approx([0.1, 0.0])
    opt = rewarm.wrap(inner(), schedule=spec, groups=[rewarm.GroupSpec(peak_lr=0.2), rewarm.GroupSpec()])
    assert [{k: v for k, v in g.items() if k in ("lr_mult", "wd_mult", "rewarm_min_lr", "rewarm_peak_lr")}
            for g in opt.param_groups] == [{"rewarm_peak_lr": 0.2}, {"wd_mult": 0.0}]  # fmt: skip
    with pytest.raises(
        ValueError, match=r"param_groups\[1\]\['wd_mult'\] = 0.0, but groups\[1\] sets wd_mult=0.5"
    ):
        rewarm.wrap(inner(), schedule=spec, groups=[rewarm.GroupSpec(), rewarm.GroupSpec(wd_mult=0.5)])
    # A field given at the value the wire defaults to is still given.
    with pytest.raises(
        ValueError, match=r"param_groups\[1\]\['wd_mult'\] = 0.0, but groups\[1\] sets wd_mult=1.0"
    ):
        rewarm.wrap(inner(), schedule=spec, groups=[rewarm.GroupSpec(), rewarm.GroupSpec(wd_mult=1.0)])
    opt = rewarm.wrap(inner(), schedule=spec, groups=[rewarm.GroupSpec(multiplier=1.0), rewarm.GroupSpec()])
    assert opt.param_groups[0]["lr_mult"] == 1.0


def test_a_tensor_group_key_changed_in_place_applies_from_the_next_update() -> None:
    a = torch.nn.Parameter(torch.zeros(1))
    mult = torch.tensor(1.0)
    opt = rewarm.wrap(torch.optim.SGD([{"params": [a], "lr_mult": mult}], lr=0.0), schedule=SPEC)
    used = record_used(opt)
    for _ in range(3):
        a.grad = torch.ones(1)
        opt.step()
    mult.fill_(0.25)
    a.grad = torch.ones(1)
    opt.step()
    assert used[-1] == pytest.approx([0.25 * ref(3)], rel=1e-12)
    mult.data.fill_(0.5)  # not seen by the version counter: a CPU key is compared by value
    a.grad = torch.ones(1)
    opt.step()
    assert used[-1] == pytest.approx([0.5 * ref(4)], rel=1e-12)


def test_a_device_tensor_key_is_watched_without_reading_it() -> None:
    # Off the CPU a key is compared by identity and version, never read
    # (.item() on CUDA is a sync per step). A meta tensor stands in for a
    # CUDA one here: reading it raises.
    from rewarm._optim import _key_value

    t = torch.empty((), device="meta")
    with ScalarReads() as reads:
        before = _key_value(t)
        assert _key_value(t) == before
        t.fill_(0.5)
        assert _key_value(t) != before
        # A replacement is another key even if it gets the freed one's id.
        group = {"lr_mult": torch.empty((), device="meta")}
        keys = _key_value(group["lr_mult"])
        del group["lr_mult"]
        group["lr_mult"] = torch.empty((), device="meta")
        assert _key_value(group["lr_mult"]) != keys
    assert reads.n == 0


class ScalarReads(TorchDispatchMode):
    """Counts reads of a tensor's value into Python (.item(), float(t)...)."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if "_local_scalar_dense" in str(func):
            self.n += 1
        return func(*args, **(kwargs or {}))


def test_a_step_whose_rates_cannot_be_fetched_changes_nothing() -> None:
    a = torch.nn.Parameter(torch.zeros(1))
    opt = rewarm.wrap(torch.optim.SGD([a], lr=0.0), schedule=SPEC, window=2)
    a.grad = torch.ones(1)
    opt.step()
    opt.close()
    failed = 0
    for _ in range(3):  # the cached window runs out within these
        before = a.detach().clone()
        n = opt.steps_applied
        try:
            opt.step()
        except rewarm.SessionNotFound:
            failed += 1
            assert torch.equal(a.detach(), before) and opt.steps_applied == n  # not applied, not counted
    assert failed >= 1


def test_wrapper_argument_errors_name_the_argument() -> None:
    model, opt = make()
    with pytest.raises(rewarm.SpecError, match=r'"n" = 2\.5'):
        opt.lrs_at(2.5)
    with pytest.raises(rewarm.SpecError, match="\"n\" = '3'"):
        opt.momentum_at("3")
    with pytest.raises(rewarm.SpecError, match='"every" = 0'):
        opt.poll_control(every=0)
    with pytest.raises(TypeError, match="param_group must be a dict, got list"):
        opt.add_param_group([torch.nn.Parameter(torch.zeros(1))])
    linear = torch.optim.lr_scheduler.LinearLR(torch.optim.SGD(model.parameters(), lr=1.0), total_iters=5)
    with pytest.raises(ValueError, match="no 'rewarm' entry"):
        opt.lr_scheduler.load_state_dict(linear.state_dict())


def test_an_lr_set_by_a_torch_scheduler_is_overridden_with_a_warning() -> None:
    model, opt = make()
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=0)
    used = record_used(opt)
    train(model, opt, 1)
    plateau.step(1.0)
    plateau.step(2.0)  # worse: halves every group's lr
    with pytest.warns(UserWarning, match="param group 0's lr was set to .* outside rewarm"):
        train(model, opt, 1)
    assert used[-1] == pytest.approx([ref(1), 0.1 * ref(1)], rel=1e-12)


def test_a_plain_torch_checkpoint_loaded_into_the_inner_optimizer_is_not_an_outside_lr() -> None:
    # The documented way to load a plain torch optimizer checkpoint: the
    # groups show the schedule's rate again at once, and no warning follows.
    import warnings

    model, opt = make()
    plain = torch.optim.SGD(
        [{"params": [model.weight]}, {"params": [model.bias], "lr_mult": 0.1}], lr=0.123, momentum=0.9
    )
    train(model, opt, 3)
    opt.optimizer.load_state_dict(plain.state_dict())
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([ref(3), 0.1 * ref(3)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train(model, opt, 1)


def test_a_cpu_tensor_lr_set_outside_is_overridden_with_a_warning() -> None:
    # torch's schedulers update a tensor lr in place (fill_); float32 rounding
    # of the schedule's own rates is no reason to warn.
    import warnings

    p = torch.nn.Parameter(torch.zeros(2))
    opt = rewarm.wrap(torch.optim.SGD([p], lr=torch.tensor(1.0)), schedule=SPEC, backend="inprocess")
    p.grad = torch.ones(2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(3):
            opt.step()
    opt.param_groups[0]["lr"].fill_(5.0)
    with pytest.warns(UserWarning, match="param group 0's lr was set to 5.0 outside rewarm"):
        opt.step()
    assert opt.param_groups[0]["lr"].item() == pytest.approx(ref(4), rel=1e-6)


def test_a_schedule_holding_nan_norms_resumes() -> None:
    # grad_norms records NaN for an update without gradients, and a refined
    # schedule built from them carries the NaN: NaN != NaN refused every
    # resume of it as "a different schedule".
    def wrap(norms: list[float]) -> rewarm.RewarmOptimizer:
        spec = rewarm.refined_spec(norms, peak_lr=0.1)
        return rewarm.wrap(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), schedule=spec)

    norms = [math.nan, 2.0, 3.0, math.nan, 1.0, 4.0]
    was = wrap(norms)
    was.step()
    now = wrap(list(norms))
    now.load_state_dict(was.state_dict())
    assert now.steps_applied == 1 and now.lrs_at(1) == was.lrs_at(1)
    other = wrap([math.nan, 2.0, 3.0, 5.0, 1.0, 4.0])
    with pytest.raises(rewarm.SpecError, match=r"grad_norms\[3\]: nan -> 5(\.0)?\. ") as refused:
        other.load_state_dict(was.state_dict())
    assert refused.value.field == "schedule.grad_norms[3]"


def test_rates_read_from_the_optimizer_are_copies() -> None:
    # lrs_at() and weight_decay_at() handed out the cached rows themselves:
    # a caller editing the list changed the rates later updates ran with.
    model = torch.nn.Linear(3, 1)
    inner = torch.optim.SGD([{"params": [model.weight]}, {"params": [model.bias]}], lr=1.0, weight_decay=0.0)
    opt = rewarm.wrap(inner, schedule={**SPEC, "weight_decay": {"start": 0.1, "end": 0.01, "steps": 40}})
    used = record_used(opt)
    lrs, wds = opt.lrs_at(1), opt.weight_decay_at(1)
    assert wds is not None
    lrs[0], wds[0] = 99.0, 99.0
    assert opt.lrs_at(1)[0] == pytest.approx(ref(1)) and opt.weight_decay_at(1)[0] != 99.0  # type: ignore[index]
    train(model, opt, 2)
    assert used[1][0] == pytest.approx(ref(1)) and inner.param_groups[0]["weight_decay"] != 99.0


def test_a_zero_gradient_norm_builds_a_refined_schedule() -> None:
    # An update whose gradients are all zero has norm 0, which grad_norms
    # records as it is; a refined schedule drops it as it drops NaN (it was
    # refused as "must be > 0", so such a run's norms built no schedule).
    p = torch.nn.Parameter(torch.zeros(4))
    opt = rewarm.wrap(torch.optim.SGD([p], lr=0.0), schedule=SPEC, track_grad_norm="l2")
    for k in range(6):
        p.grad = torch.full((4,), float(k % 3))
        opt.step()
    assert opt.grad_norms == [0.0, 2.0, 4.0, 0.0, 2.0, 4.0]
    got = rewarm.preview(rewarm.refined_spec(opt.grad_norms, peak_lr=0.1), list(range(7)))["lr"]
    real = {"kind": "refined", "peak_lr": 0.1, "grad_norms": [2.0, 4.0, 2.0, 4.0], "total_steps": 6}
    assert got == rewarm.preview(real, list(range(7)))["lr"] and got[0] > 0
    with pytest.raises(rewarm.SpecError, match=r"grad_norms\[1\]") as refused:
        rewarm.preview(rewarm.refined_spec([1.0, -1.0, 2.0], peak_lr=0.1), [0])
    assert refused.value.field == "grad_norms[1]"


def test_close_is_idempotent_and_a_later_fetch_says_closed() -> None:
    model, opt = make(window=4)
    train(model, opt, 1)
    opt.close()
    opt.close()  # a second close (a finally: after an explicit close) is a no-op
    with pytest.raises(rewarm.SessionNotFound, match=r"closed \(close\(\)\)"):
        train(model, opt, 10)  # runs on the cached window, then needs the closed session
