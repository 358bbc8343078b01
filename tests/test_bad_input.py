"""Bad input gets an error that names the field and value, and changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import rewarm
import rewarm.mod as M

COSINE = {"kind": "cosine", "peak_lr": 0.1, "total_steps": 100}
REPLAY = {
    "sources": [{"name": "a", "size": 1000}],
    "global_batch_size": 4,
    "stages": [{"steps": 10, "mixture": {"a": 1.0}}],
}


def sgd(*params: torch.nn.Parameter, **kw) -> torch.optim.SGD:
    return torch.optim.SGD(list(params) or [torch.nn.Parameter(torch.zeros(1))], lr=1.0, **kw)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"name": 5}, TypeError, "name=5"),
        ({"window": 0}, ValueError, "window=0"),
        ({"window": 2.7}, TypeError, "window=2.7"),
        ({"window": "abc"}, TypeError, "window='abc'"),
        ({"multipliers": 2.0}, TypeError, "multipliers=2.0: expected a list"),
        ({"multipliers": ["x"]}, TypeError, r"multipliers\[0\]='x'"),
        ({"groups": [3]}, TypeError, r"groups\[0\]=3"),
        ({"groups": [{"multiplier": "x"}]}, TypeError, r"groups\[0\]\.multiplier='x'"),
    ],
)
def test_wrap_arguments(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        rewarm.wrap(sgd(), COSINE, **kwargs)


def test_a_failed_wrap_leaves_the_groups_as_they_were() -> None:
    inner = sgd()
    before = dict(inner.param_groups[0])
    for kwargs in (
        {"schedule": {**COSINE, "peak_lr": "x"}, "multipliers": [2.0]},
        {"schedule": COSINE, "multipliers": [float("nan")]},  # refused in Go, after the keys were written
        {"schedule": COSINE, "groups": [{"min_lr": 0.5, "peak_lr": 0.1}]},
    ):
        with pytest.raises(rewarm.SpecError):
            rewarm.wrap(inner, **kwargs)
        assert inner.param_groups[0] == before
    # Retrying works: LR(0) of a warmup-free cosine is its peak, 0.1.
    assert rewarm.wrap(inner, COSINE, multipliers=[0.5]).param_groups[0]["lr"] == pytest.approx(0.05)


def _trained() -> tuple[rewarm.RewarmOptimizer, torch.nn.Parameter, dict]:
    p = torch.nn.Parameter(torch.ones(3))
    opt = rewarm.wrap(sgd(p, momentum=0.9), COSINE)
    for _ in range(7):
        p.grad = torch.ones(3)
        opt.step()
    sd = opt.state_dict()
    for _ in range(23):
        p.grad = torch.ones(3)
        opt.step()
    return opt, p, sd


@pytest.mark.parametrize(
    ("corrupt", "error", "match"),
    [
        (lambda sd: sd["rewarm"].__setitem__("control_seq", "x"), ValueError, "control_seq='x'"),
        (lambda sd: sd["rewarm"].__setitem__("control_epoch", None), ValueError, "control_epoch=None"),
        (lambda sd: sd["param_groups"][0].__setitem__("lr_mult", -2.0), rewarm.SpecError, "multiplier = -2"),
        (lambda sd: sd["param_groups"][0].__setitem__("lr_mult", "abc"), ValueError, "lr_mult='abc'"),
        (lambda sd: sd["param_groups"][0].pop("params"), ValueError, r"param_groups\[0\].*'params'"),
        (lambda sd: sd.__setitem__("param_groups", [1]), ValueError, r"param_groups\[0\] = 1"),
        (lambda sd: sd.__setitem__("param_groups", "ab"), ValueError, "'param_groups' \\(a list\\)"),
    ],
)
def test_a_refused_load_changes_nothing(corrupt, error: type, match: str) -> None:
    opt, p, sd = _trained()
    corrupt(sd)
    buf = opt.state[p]["momentum_buffer"].clone()
    lrs = [g["lr"] for g in opt.param_groups]
    with pytest.raises(error, match=match):
        opt.load_state_dict(sd)
    assert opt.steps_applied == 30 and [g["lr"] for g in opt.param_groups] == lrs
    assert torch.equal(opt.state[p]["momentum_buffer"], buf)
    p.grad = torch.ones(3)
    opt.step()  # still works
    assert opt.steps_applied == 31


def test_load_state_dict_of_a_non_mapping() -> None:
    opt, _, _ = _trained()
    with pytest.raises(ValueError, match="expected a mapping, got list"):
        opt.load_state_dict([1, 2])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("op", "kwargs", "field"),
    [
        ("anneal", {"at_step": 7.9, "steps": 10}, "at_step"),
        ("anneal", {"at_step": "x", "steps": 10}, "at_step"),
        ("anneal", {"at_step": 2**70, "steps": 10}, "at_step"),
        ("anneal", {"steps": 10.5}, "steps"),
        ("anneal", {"steps": 10, "min_lr": "low"}, "min_lr"),
        ("extend", {"total_steps": float("nan")}, "total_steps"),
        ("extend", {"total_steps": 200, "mode": 1}, "mode"),
        ("anneal", {"steps": 10, "stepz": 3}, "stepz"),
        ("new_stage", {}, "schedule"),
        # The Go core names the argument as Python and the wire do, not its own Spec field.
        ("new_stage", {"schedule": {**COSINE, "total_steps": -3}}, "schedule.total_steps"),
        ("new_stage", {"schedule": {**COSINE, "momentum": 0.9}}, "schedule.momentum"),
        ("anneal", {"at_step": 2, "steps": 10}, "at_step"),  # before the 3 updates already applied
    ],
)
def test_replan_arguments_name_their_field(op: str, kwargs: dict, field: str) -> None:
    opt = rewarm.wrap(sgd(), COSINE)
    for _ in range(3):
        opt.step()
    with pytest.raises(rewarm.SpecError) as ei:
        opt.replan(op, **kwargs)
    assert ei.value.field == field and field in str(ei.value)
    assert opt.lrs_at(50) == rewarm.wrap(sgd(), COSINE).lrs_at(50)  # nothing applied


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"multipliers": [1.0], "groups": [{}]}, "groups"),
        ({"track_grad_norm": "l3"}, "track_grad_norm"),
        ({"window": 0}, "window"),
        ({"groups": [{"multiplier": 1.0, "lr_scale": 2.0}]}, "groups[0].lr_scale"),
        ({"multipliers": [1.0, 2.0]}, "multipliers"),
    ],
)
def test_wrap_arguments_name_their_field(kwargs: dict, field: str) -> None:
    with pytest.raises(rewarm.SpecError) as ei:
        rewarm.wrap(sgd(), COSINE, **kwargs)
    assert ei.value.field == field


def test_conflicting_group_key_names_its_field() -> None:
    opt = sgd()
    opt.param_groups[0]["lr_mult"] = 0.5
    with pytest.raises(rewarm.SpecError) as ei:
        rewarm.wrap(opt, COSINE, multipliers=[2.0])
    assert ei.value.field == "multipliers[0].multiplier"
    opt.param_groups[0]["lr_mult"] = "half"
    with pytest.raises(rewarm.SpecError) as ei:
        rewarm.wrap(opt, COSINE)
    assert ei.value.field == "lr_mult"


def test_connect_arguments_name_their_field(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(rewarm.SpecError) as ei:
        rewarm.connect("grpc")
    assert ei.value.field == "backend"
    monkeypatch.delenv("REWARM_SOCKET", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    with pytest.raises(rewarm.SpecError) as ei:
        rewarm.connect("socket")
    assert ei.value.field == "socket_path"
    monkeypatch.setenv("REWARM_FAILOVER", "maybe")
    with pytest.raises(rewarm.SpecError) as ei:
        rewarm.connect("inprocess")
    assert ei.value.field == "REWARM_FAILOVER"


def test_report_names_the_metric() -> None:
    opt = rewarm.wrap(sgd(), {"kind": "plateau", "peak_lr": 0.1})
    for bad in ("abc", None):
        with pytest.raises(rewarm.SpecError, match="metric="):
            opt.report(bad)  # type: ignore[arg-type]
    opt.report(torch.tensor(0.5))  # a 0-d tensor is a number


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"rank": 0, "world_size": 2.0}, "world_size"),
        ({"rank": True, "world_size": 2}, "rank"),
        ({"rank": "0", "world_size": 2}, "rank"),
        ({"rank": 0, "world_size": 0}, "world_size"),
        ({"rank": 0, "world_size": 1, "window": 0}, "window"),
        ({"rank": 0, "world_size": 1, "start_step": 2.5}, "start_step"),
        ({"rank": 5, "world_size": 2}, "rank"),
        ({"rank": 0, "world_size": 1, "start_step": 99}, "start_step"),
        ({"rank": 0, "world_size": 1, "window": 10**9}, "window"),
    ],
)
def test_sampler_arguments_name_their_field(kwargs: dict, field: str) -> None:
    with pytest.raises(rewarm.SpecError) as ei:
        rewarm.ReplaySampler(REPLAY, **kwargs)
    assert ei.value.field == field


def test_sampler_state_and_steps() -> None:
    s = rewarm.ReplaySampler(REPLAY, rank=0, world_size=1)
    for bad, match in (([], "expected a mapping, got list"), (None, "expected a mapping, got NoneType")):
        with pytest.raises(ValueError, match=match):
            s.load_state_dict(bad)  # type: ignore[arg-type]
    good = s.state_dict()
    with pytest.raises(ValueError, match="no 'step'"):
        s.load_state_dict({k: v for k, v in good.items() if k != "step"})
    for bad_step in (2.7, "5"):
        with pytest.raises(rewarm.SpecError, match='"step"'):
            s.set_step(bad_step)  # type: ignore[arg-type]
    with pytest.raises(rewarm.SpecError, match='"step" = 1180591620717411303424'):
        s.quotas(2**70)
    with pytest.raises(rewarm.SpecError, match=r'"steps\[0\]" = 1.5'):
        rewarm.preview(COSINE, [1.5])  # type: ignore[list-item]
    assert s.state_dict() == good


def test_integers_past_2_pow_53_are_refused() -> None:
    with pytest.raises(rewarm.SpecError, match=r'"seed" = 9007199254740993: too large'):
        rewarm.ReplaySampler({**REPLAY, "seed": 2**53 + 1}, rank=0, world_size=1)
    with pytest.raises(rewarm.SpecError, match=r'"total_steps" = 9007199254740993'):
        rewarm.wrap(sgd(), {**COSINE, "total_steps": 2**53 + 1})


def test_mod_arguments() -> None:
    with pytest.raises(rewarm.SpecError, match="num_layers"):
        M.plan(num_layers="8", tokens=24)  # type: ignore[arg-type]
    with pytest.raises(rewarm.SpecError, match="buckets"):
        M.plan(num_layers=8, buckets="24")  # type: ignore[arg-type]
    cfg = M.LlamaConfig(vocab_size=64, hidden_size=32, num_layers=2, num_heads=4, ffn_size=64)
    model = M.TinyLlama(cfg)
    with pytest.raises(TypeError, match=r"rewarm\.mod\.Plan"):
        M.apply(model, None)  # type: ignore[arg-type]
    block = model.layers[0]
    with pytest.raises(TypeError, match=r"k=2\.5"):
        M.MoDLayer(block, k=2.5, tokens=8, hidden_size=32)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="scale=nan"):
        M.MoDLayer(block, k=2, tokens=8, hidden_size=32, scale=float("nan"))
    with pytest.raises(ValueError, match=r"k_by_tokens\[3\] = 5"):
        M.MoDLayer(block, k=5, tokens=8, hidden_size=32, k_by_tokens=[0, 0, 1, 5, 1, 2, 3, 4, 5])
    layer = M.MoDLayer(block, k=2, tokens=8, hidden_size=16)
    route = torch.zeros(1, 10, dtype=torch.bool)
    route[:, :8] = True
    with pytest.raises(ValueError, match="hidden size 32, this layer's router 16"):
        layer(torch.zeros(1, 10, 32), torch.arange(10), route_mask=route)


# What go-yaml v3 (the CLI's reader) makes of each plain scalar, from a Go run.
GO_YAML = {
    "012": 10, "0777": 511, "1_000": 1000, "0b101": 5, "0o17": 15, "0x1F": 31, "-012": -10,
    "08": 8.0, "3e-4": 3e-4, "1e3": 1000.0, "+5": 5, "-0x10": -16, "1_0.5": 10.5, "yes": "yes",
    "on": "on", "True": True, "NULL": None, "~": None, ".5": 0.5, "5.": 5.0, "-.Inf": float("-inf"),
    "00": 0, "1__0": 10, "_1": "_1", "0b": "0b", "1e": "1e", "0.1_0": 0.1,
}  # fmt: skip


def test_spec_files_read_as_the_cli_reads_them(tmp_path: Path) -> None:
    f = tmp_path / "v.yaml"
    f.write_text("".join(f"v{i}: {v}\n" for i, v in enumerate(GO_YAML)))
    got = rewarm._spec.load_spec(f)
    for i, (text, want) in enumerate(GO_YAML.items()):
        assert got[f"v{i}"] == want and type(got[f"v{i}"]) is type(want), (text, got[f"v{i}"])
    # 3e-4 is a number and 012 is ten, as `rewarm show` reads them: the horizon is at step 10.
    f = tmp_path / "s.yaml"
    f.write_text("kind: cosine\npeak_lr: 3e-4\ntotal_steps: 012\nwarmup_steps: 0x4\n")
    assert rewarm.preview(f, [0, 4, 10])["lr"] == pytest.approx([0.0, 3e-4, 0.0])
    cases = {
        "dup.yaml": ("kind: cosine\nkind: linear\n", "dup.yaml: duplicate key 'kind' \\(line 2\\)"),
        "bad.yaml": ("kind: [cosine\n", "bad.yaml: not valid YAML"),
        "dup.json": ('{"kind": "cosine", "kind": "linear"}', "dup.json: duplicate key 'kind'"),
        "bad.json": ('{"kind": ', "bad.json: not valid JSON"),
    }
    for name, (text, match) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(rewarm.SpecError, match=match):
            rewarm.preview(tmp_path / name, [0])


def _wrapped() -> rewarm.RewarmOptimizer:
    return rewarm.wrap(sgd(), COSINE, backend="inprocess")


def _replan_in_the_past() -> None:
    opt = rewarm.wrap(sgd(), COSINE, backend="inprocess")
    for _ in range(5):
        opt.step()
    opt.replan("anneal", at_step=3, steps=5)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: rewarm.wrap(sgd(), COSINE, backend="inprocess", window=0), "window=0"),
        (lambda: rewarm.wrap(sgd(), COSINE, backend="inproc"), "inproc"),
        (lambda: rewarm.wrap(sgd(), COSINE, backend="inprocess", multipliers=[1.0, 2.0]), "multipliers"),
        (lambda: rewarm.wrap(sgd(), COSINE, backend="inprocess", groups=[{"multipler": 2.0}]), "multipler"),
        (_replan_in_the_past, "at_step"),
        (lambda: rewarm.ReplaySampler(REPLAY, rank=2, world_size=2, backend="inprocess"), "rank"),
        (lambda: rewarm.ReplaySampler(REPLAY, backend="inprocess", window=0), "window"),
        (lambda: M.plan(num_layers=4, tokens=16, schedule={"kind": "prd"}, rounding={"mode": "up"}), "up"),
        # An omitted argument is said to be missing, not reported as the value 0.
        (lambda: _wrapped().replan("anneal"), 'field "steps" is missing'),
        (lambda: _wrapped().replan("extend"), 'field "total_steps" is missing'),
        (lambda: M.plan(num_layers=32), 'field "tokens": missing'),
    ],
)
def test_refused_arguments_are_rewarm_errors(call, match: str) -> None:
    # docs/README.md: every error is a RewarmError; a refused value is a
    # SpecError, which is also a ValueError.
    with pytest.raises(rewarm.SpecError, match=match) as info:
        call()
    assert isinstance(info.value, rewarm.RewarmError) and isinstance(info.value, ValueError)
