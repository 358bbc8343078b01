"""Mixture-of-Depths plans through Python and the modules that execute them."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import rewarm
import rewarm.mod as M

# k per layer for N = 576 under the released p-MoD schedule: the table of
# shared/reference/mod.md §1.3, worked out there from p-MoD's formula.
VEC576 = (
    [576] * 8 + [486, 464, 440, 414, 388, 360, 331, 302, 273, 244, 215, 187, 161, 135, 111, 89] + [86] * 8
)


def test_plan_matches_the_test_vector_on_both_backends(
    sidecar: rewarm.Sidecar, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = M.plan(num_layers=32, tokens=576, backend="inprocess")
    monkeypatch.setenv("REWARM_SOCKET", sidecar.path)
    b = M.plan(num_layers=32, tokens=576, backend="socket")
    assert a == b
    assert [lp.k for lp in a.layers] == VEC576
    assert [lp.route for lp in a.layers] == [False] * 8 + [True] * 24
    assert a.summary.mean_ratio == pytest.approx(0.5375)
    buckets = M.plan(num_layers=32, buckets=[576, 2880], rounding={"multiple": 64})
    assert [b.tokens for b in buckets.buckets] == [576, 2880]
    assert all(lp.k % 64 == 0 or lp.k == 576 for lp in buckets.for_tokens(500).layers)
    with pytest.raises(ValueError, match="largest bucket"):
        buckets.for_tokens(3000)
    with pytest.raises(rewarm.SpecError) as ei:
        M.plan(num_layers=32, tokens=576, schedule={"kind": "zigzag"})
    assert ei.value.field == "schedule.kind"


def _model(seed: int = 0, layers: int = 4) -> M.TinyLlama:
    torch.manual_seed(seed)
    return M.TinyLlama(
        M.LlamaConfig(vocab_size=64, hidden_size=32, num_layers=layers, num_heads=4, ffn_size=64)
    )


def _batch(b: int = 2, text: int = 6, routable: int = 20):
    torch.manual_seed(1)
    ids = torch.randint(0, 64, (b, text + routable))
    # Routable span in the middle, as an image between a prompt and a question.
    mask = torch.zeros(b, text + routable, dtype=torch.bool)
    mask[:, 3 : 3 + routable] = True
    return ids, mask


def test_every_ratio_one_is_bit_identical() -> None:
    ids, mask = _batch()
    dense = _model()
    want = dense(ids)
    # Wrap every layer with k = N: the gather/scatter path, all tokens kept.
    wrapped = _model()
    for i, blk in enumerate(wrapped.layers):
        wrapped.layers[i] = M.MoDLayer(blk, k=20, tokens=20, hidden_size=32)
    assert torch.equal(wrapped(ids, route_mask=mask), want)
    # A plan whose ratios are all 1 wraps nothing.
    same = M.apply(
        _model(), M.plan(num_layers=4, tokens=20, schedule={"kind": "explicit", "ratios": [1, 1, 1, 1]})
    )
    assert not any(isinstance(layer, M.MoDLayer) for layer in same.layers)
    assert torch.equal(same(ids, route_mask=mask), want)


def test_skipped_tokens_are_scaled_identity_and_kept_ones_follow_string() -> None:
    ids, mask = _batch()
    model = _model()
    blk = model.layers[1]
    layer = M.MoDLayer(blk, k=5, tokens=20, hidden_size=32)
    torch.nn.init.normal_(layer.router.weight, std=0.1)
    x = model.embed(ids)
    pos = torch.arange(ids.shape[1]).expand_as(ids)
    out = layer(x, pos, route_mask=mask)
    r = layer.router(x)
    w = 0.2 * torch.tanh(r) + 1
    assert torch.all((w >= 0.8) & (w <= 1.2))
    # Which routable tokens were kept: the 5 largest logits per row.
    for b in range(ids.shape[0]):
        routable = mask[b].nonzero().squeeze(-1)
        kept = set(routable[r[b, routable].topk(5).indices].tolist())
        keep_idx = sorted(set(range(ids.shape[1])) - set(routable.tolist()) | kept)
        a, f = blk.forward_halves(x[b : b + 1, keep_idx], pos[b : b + 1, keep_idx])
        for j, t in enumerate(keep_idx):
            gate = w[b, t] if t in kept else 1.0
            torch.testing.assert_close(out[b, t], x[b, t] + a[0, j] + gate * f[0, j], rtol=1e-5, atol=1e-6)
        for t in set(routable.tolist()) - kept:
            torch.testing.assert_close(out[b, t], w[b, t] * x[b, t])


def test_ties_go_to_the_lower_position_and_positions_stay_original() -> None:
    seen = {}

    class Probe(torch.nn.Module):
        def forward_halves(self, x, positions):
            seen["positions"] = positions.clone()
            return torch.zeros_like(x), torch.zeros_like(x)

    layer = M.MoDLayer(Probe(), k=3, tokens=5, hidden_size=4)
    mask = torch.tensor([[False, True, True, False, True, True, True]])
    layer(torch.randn(1, 7, 4), torch.arange(7), route_mask=mask)
    # Zero router: every logit ties, so the first three routable positions win.
    assert seen["positions"].tolist() == [[0, 1, 2, 3, 4]]


def test_gradients_reach_the_router() -> None:
    ids, mask = _batch()
    model = M.apply(_model(), M.plan(num_layers=4, tokens=20, schedule={"kind": "interleave", "ratio": 0.5}))
    routers = [layer.router.weight for layer in model.layers if isinstance(layer, M.MoDLayer)]
    assert len(routers) == 2
    loss = torch.nn.functional.cross_entropy(model(ids, route_mask=mask).flatten(0, 1), ids.flatten())
    loss.backward()
    for g in routers:
        assert g.grad is not None and g.grad.abs().sum() > 0


def _per_sample_reference(block, router, x, pos, route, valid, ratio):
    """p-MoD's per-sample routing, one sample at a time with list indexing:
    k_b = trunc(float32(N_b)·float32(R)) of the N_b valid routable tokens,
    the block on text + the k_b chosen (original order), STRing around it."""
    out = torch.empty_like(x)
    r = router(x).float()
    w = 0.2 * torch.tanh(r) + 1
    for b in range(x.shape[0]):
        cand = [t for t in range(x.shape[1]) if route[b, t] and valid[b, t]]
        k_b = int(np.trunc(np.float32(len(cand)) * np.float32(ratio)))
        # The k_b largest logits, ties to the lower position.
        chosen = set(sorted(cand, key=lambda t: (-r[b, t].item(), t))[:k_b])
        keep = [t for t in range(x.shape[1]) if not route[b, t] or t in chosen]
        a, f = block.forward_halves(x[b : b + 1, keep], pos[b : b + 1, keep])
        for t in range(x.shape[1]):
            out[b, t] = w[b, t] * x[b, t]
        for j, t in enumerate(keep):
            out[b, t] = x[b, t] + a[0, j] + (w[b, t] if route[b, t] else 1.0) * f[0, j]
    return out, k_b


@pytest.mark.parametrize(("real", "k_real"), [(20, 9), (13, 5), (3, 1), (0, 0)])  # trunc(real·0.45)
def test_padded_samples_keep_their_own_k(real: int, k_real: int) -> None:
    # Bucket of 20 routable tokens; sample 1 has only `real` of them, the
    # rest padding. Padding in the middle of the span, then text after it.
    ids, mask = _batch(b=2, text=6, routable=20)
    valid = torch.ones_like(mask)
    valid[1, 3 + real // 2 : 3 + real // 2 + 20 - real] = False
    plan = M.plan(num_layers=4, tokens=20, schedule={"kind": "explicit", "ratios": [1, 0.45, 1, 1]})
    lp = plan.layers[1]
    assert len(lp.k_by_tokens) == 21 and lp.k_by_tokens[20] == lp.k == 9
    model = _model()
    layer = M.MoDLayer(model.layers[1], k=lp.k, tokens=20, hidden_size=32, k_by_tokens=lp.k_by_tokens)
    torch.manual_seed(3)
    torch.nn.init.normal_(layer.router.weight)
    x = model.embed(ids)
    pos = torch.arange(ids.shape[1]).expand_as(ids)
    with torch.no_grad():
        got = layer(x, pos[:1], route_mask=mask, valid_mask=valid)  # positions [1, S] broadcast
        want, k_b = _per_sample_reference(layer.block, layer.router, x, pos, mask, valid, lp.ratio)
    assert k_b == k_real and lp.k_by_tokens[real] == k_real
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_gradients_match_the_per_sample_reference() -> None:
    # Input, router and block gradients through the layer's row moves equal
    # those through the reference's list indexing, padded sample included.
    ids, mask = _batch(b=2, text=6, routable=20)
    valid = torch.ones_like(mask)
    valid[1, 8:15] = False
    plan = M.plan(num_layers=4, tokens=20, schedule={"kind": "explicit", "ratios": [1, 0.45, 1, 1]})
    lp = plan.layers[1]
    model = _model()
    layer = M.MoDLayer(model.layers[1], k=lp.k, tokens=20, hidden_size=32, k_by_tokens=lp.k_by_tokens)
    torch.manual_seed(4)
    torch.nn.init.normal_(layer.router.weight)
    pos = torch.arange(ids.shape[1]).expand_as(ids)
    probe = torch.randn(2, ids.shape[1], 32)
    grads = []
    for run in ("layer", "reference"):
        x = model.embed(ids).detach().requires_grad_(True)
        layer.zero_grad()
        if run == "layer":
            out = layer(x, pos, route_mask=mask, valid_mask=valid)
        else:
            out, _ = _per_sample_reference(layer.block, layer.router, x, pos, mask, valid, lp.ratio)
        (out * probe).sum().backward()
        assert x.grad is not None and layer.router.weight.grad is not None
        grads.append((x.grad, layer.router.weight.grad.clone(), layer.block.qkv.weight.grad.clone()))
    for got, want in zip(*grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_a_padded_sample_matches_the_same_sample_unpadded() -> None:
    # 12 real routable tokens padded into a 24 bucket, beside a full sample,
    # against the same sample run unpadded in a 12 bucket: the real tokens'
    # logits agree through dense and routed layers alike (TinyLlama hides the
    # padding from dense attention and numbers positions without it), and
    # the padding's own ids change nothing.
    import copy

    base = _model()
    ratios = {"kind": "explicit", "ratios": [1, 0.5, 1, 0.5]}
    m24 = M.apply(copy.deepcopy(base), M.plan(num_layers=4, tokens=24, schedule=ratios))
    m12 = M.apply(copy.deepcopy(base), M.plan(num_layers=4, tokens=12, schedule=ratios))
    torch.manual_seed(5)
    for a, b in zip(m24.layers, m12.layers, strict=True):
        if isinstance(a, M.MoDLayer):
            torch.nn.init.normal_(a.router.weight)
            b.router.load_state_dict(a.router.state_dict())
    real = torch.randint(0, 64, (1, 18))  # 3 text, 12 image, 3 text
    full = torch.randint(0, 64, (1, 30))  # 3 text, 24 image, 3 text
    padded = torch.cat([real[:, :15], torch.full((1, 12), 7), real[:, 15:]], 1)
    route = torch.zeros(30, dtype=torch.bool)
    route[3:27] = True
    valid = torch.ones(2, 30, dtype=torch.bool)
    valid[1, 15:27] = False
    route12 = torch.zeros(18, dtype=torch.bool)
    route12[3:15] = True
    kept = torch.cat([torch.arange(15), torch.arange(27, 30)])
    with torch.no_grad():
        both = m24(torch.cat([full, padded]), route_mask=route, valid_mask=valid)
        other_padding = m24(torch.cat([full, padded.index_fill(1, torch.arange(15, 27), 3)]), route, valid)
        alone = m12(real, route_mask=route12)
        full_alone = m24(full, route_mask=route)
    torch.testing.assert_close(both[1, kept], alone[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(both[0], full_alone[0], rtol=1e-5, atol=1e-5)
    assert torch.equal(other_padding[:, kept], both[:, kept])


def test_forward_has_no_host_sync_or_boolean_mask_indexing() -> None:
    # Every aten call of forward, recorded below Python: .item(), .tolist(),
    # int()/bool() of a tensor reach _local_scalar_dense, and a boolean mask
    # index reaches nonzero, masked_select or an index op with a bool index.
    # torch.compile(fullgraph=True) does not catch these on every version.
    from torch.utils._python_dispatch import TorchDispatchMode

    class Calls(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.bad: list[str] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = str(func)
            flat = [*args, *(kwargs or {}).values()]
            flat += [t for a in flat if isinstance(a, (list, tuple)) for t in a]
            bool_index = "index" in name and any(
                isinstance(a, torch.Tensor) and a.dtype == torch.bool for a in flat[1:]
            )
            if bool_index or any(n in name for n in ("_local_scalar_dense", "nonzero", "masked_select")):
                self.bad.append(name)
            return func(*args, **(kwargs or {}))

    ids, mask = _batch(b=2)
    plan = M.plan(num_layers=4, tokens=20, schedule={"kind": "explicit", "ratios": [1, 0.45, 1, 1]})
    lp = plan.layers[1]
    model = _model()
    layer = M.MoDLayer(model.layers[1], k=lp.k, tokens=20, hidden_size=32, k_by_tokens=lp.k_by_tokens)
    x, pos = model.embed(ids).detach(), torch.arange(ids.shape[1])
    valid = torch.ones_like(mask)
    valid[1, 5:12] = False
    for kwargs in ({"route_mask": mask}, {"route_mask": mask, "valid_mask": valid}):
        with Calls() as calls:
            layer(x, pos, **kwargs).sum().backward()
        assert calls.bad == [], f"forward/backward with {sorted(kwargs)}: {calls.bad}"
    # The recorder sees what it is meant to catch.
    with Calls() as calls:
        _ = x[mask], x.sum().item()
    assert any("nonzero" in c or "index" in c for c in calls.bad)
    assert any("_local_scalar" in c for c in calls.bad)


def test_route_mask_and_valid_mask_contracts() -> None:
    ids, mask = _batch(b=2)
    model = _model()
    layer = M.MoDLayer(model.layers[0], k=5, tokens=20, hidden_size=32)
    x, pos = model.embed(ids), torch.arange(ids.shape[1])
    bad = mask.clone()
    bad[1, 0] = True  # 21 routable in one row
    with pytest.raises(RuntimeError, match="exactly tokens=20"):
        layer(x, pos, route_mask=bad)
    with pytest.raises(ValueError, match="k_by_tokens"):
        layer(x, pos, route_mask=mask, valid_mask=mask)
    with pytest.raises(ValueError, match="tokens \\+ 1 = 21"):
        M.MoDLayer(model.layers[0], k=5, tokens=20, hidden_size=32, k_by_tokens=[0, 5])
    with pytest.raises(ValueError, match="valid_mask without route_mask"):
        layer(x, pos, valid_mask=mask)
    for hidden in (0, -4):
        with pytest.raises(ValueError, match=f"hidden_size={hidden}: must be >= 1"):
            M.MoDLayer(model.layers[0], k=5, tokens=20, hidden_size=hidden)
    # Sizes must be whole numbers: a float tensor has __index__ but no integer value.
    for bad_k in (5.0, torch.tensor(4.5), torch.tensor(5.0), True):
        with pytest.raises(TypeError, match=r"k=.*expected an int"):
            M.MoDLayer(model.layers[0], k=bad_k, tokens=20, hidden_size=32)  # type: ignore[arg-type]
    table = list(range(6)) + [5] * 15
    M.MoDLayer(model.layers[0], k=torch.tensor(5), tokens=20, hidden_size=32, k_by_tokens=table)
    with pytest.raises(TypeError, match=r"k_by_tokens\[1\]=0.5: expected an int"):
        M.MoDLayer(model.layers[0], k=5, tokens=20, hidden_size=32, k_by_tokens=[0, 0.5, *table[2:]])


def test_any_input_layout_and_an_empty_batch() -> None:
    # x may come in any memory layout (a transposed patch embedding keeps
    # hidden-major strides) and with no rows at all.
    ids, mask = _batch(b=3)
    model = _model()
    layer = M.MoDLayer(model.layers[1], k=5, tokens=20, hidden_size=32)
    torch.nn.init.normal_(layer.router.weight, std=0.1)
    x, pos = model.embed(ids).detach(), torch.arange(ids.shape[1])
    want = layer(x, pos, route_mask=mask)
    hidden_major = x.permute(2, 0, 1).contiguous().permute(1, 2, 0)
    assert not hidden_major.is_contiguous()
    torch.testing.assert_close(layer(hidden_major, pos, route_mask=mask), want)
    assert layer(x[:0], pos, route_mask=mask[:0]).shape == (0, ids.shape[1], 32)


def test_a_layer_that_keeps_nothing_does_not_run_its_block() -> None:
    # k = 0 with every token routable (a small bucket at the 0.15 floor: 5·0.15
    # truncates to 0) leaves no token for the block; HF's attention cannot
    # reshape an empty sequence, so the block must not see one.
    class NoEmpty(torch.nn.Module):
        def __init__(self, block: torch.nn.Module) -> None:
            super().__init__()
            self.block = block

        def forward_halves(self, x: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, ...]:
            if x.shape[1] == 0:
                raise RuntimeError("cannot reshape tensor of 0 elements")
            return self.block.forward_halves(x, positions)

    assert M.plan(num_layers=32, tokens=5).layers[31].k == 0
    model = _model()
    layer = M.MoDLayer(NoEmpty(model.layers[1]), k=0, tokens=5, hidden_size=32)
    torch.nn.init.normal_(layer.router.weight, std=0.1)
    x, pos = torch.randn(2, 5, 32), torch.arange(5)
    w = 0.2 * torch.tanh(layer.router(x)) + 1
    out = layer(x, pos, route_mask=torch.ones(5, dtype=torch.bool))
    torch.testing.assert_close(out, w.unsqueeze(-1) * x)
    # The block's parameters still get a gradient, zero, as when the block ran
    # on no token: DDP without find_unused_parameters expects one for each.
    out.sum().backward()
    grads = [p.grad for p in model.layers[1].parameters()]
    assert all(g is not None and not g.any() for g in grads) and layer.router.weight.grad.any()
    model.zero_grad(set_to_none=True)
    # Parameters of mixed dtypes (a bf16 projection beside fp32 norms) too,
    # and the output keeps x's dtype.
    model.layers[1].qkv.to(torch.bfloat16)
    assert layer(x, pos, route_mask=torch.ones(5, dtype=torch.bool)).dtype == x.dtype
    model.layers[1].qkv.to(torch.float32)
    # One non-routable token: the block runs on it alone.
    layer = M.MoDLayer(NoEmpty(model.layers[1]), k=0, tokens=4, hidden_size=32)
    mask = torch.tensor([False, True, True, True, True])
    a, f = model.layers[1].forward_halves(x[:, :1], pos[:1].expand(2, 1))
    out = layer(x, pos, route_mask=mask)
    torch.testing.assert_close(out[:, 0], (x[:, 0] + a[:, 0]) + f[:, 0])


def test_a_layer_that_keeps_nothing_gives_dtensor_parameters_a_zero_gradient(tmp_path) -> None:
    # Under FSDP2 or tensor parallelism the block's parameters are DTensors:
    # the k = 0 path must still add their (empty) contribution to a plain
    # output, and each gets a zero gradient of its own kind.
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, distribute_module

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        model = _model()
        block = model.layers[1]
        distribute_module(block, init_device_mesh("cpu", (1,)))
        assert all(isinstance(p, DTensor) for p in block.parameters())
        layer = M.MoDLayer(block, k=0, tokens=5, hidden_size=32)
        torch.nn.init.normal_(layer.router.weight, std=0.1)
        x, pos = torch.randn(2, 5, 32), torch.arange(5)
        out = layer(x, pos, route_mask=torch.ones(5, dtype=torch.bool))
        assert type(out) is torch.Tensor
        torch.testing.assert_close(out, (0.2 * torch.tanh(layer.router(x)) + 1).unsqueeze(-1) * x)
        out.sum().backward()
        for name, p in block.named_parameters():
            assert isinstance(p.grad, DTensor) and not p.grad.to_local().any(), name
    finally:
        dist.destroy_process_group()


def test_plan_arguments_name_themselves() -> None:
    want = re.escape('"schedule" = \'prd\': expected a mapping such as {"kind"')
    with pytest.raises(rewarm.SpecError, match=want):
        M.plan(num_layers=4, tokens=8, schedule="prd")  # type: ignore[arg-type]
    with pytest.raises(rewarm.SpecError, match="\"rounding\" = 'floor': expected a mapping"):
        M.plan(num_layers=4, tokens=8, rounding="floor")  # type: ignore[arg-type]
    p = M.plan(num_layers=4, buckets=[8, 16])
    assert p.for_tokens(1).tokens == 8 and p.for_tokens(9).tokens == 16
    for bad, match in ((0, "tokens=0: a bucket holds at least 1"), (-1, '"tokens" = -1: must be in')):
        with pytest.raises(ValueError, match=match):
            p.for_tokens(bad)
        with pytest.raises(ValueError, match=match):
            M.apply(_model(), p, tokens=bad)
    for bad in (5.5, "3"):
        with pytest.raises((TypeError, ValueError), match='"tokens"'):
            p.for_tokens(bad)  # type: ignore[arg-type]


def test_per_sample_table_survives_meta_initialisation() -> None:
    # Build on meta, wrap, to_empty, load: the non-persistent table must hold
    # the plan's values again, not uninitialised memory.
    cfg = M.LlamaConfig(vocab_size=64, hidden_size=32, num_layers=4, num_heads=4, ffn_size=64)
    plan = M.plan(num_layers=4, tokens=20, schedule={"kind": "explicit", "ratios": [1, 0.45, 1, 1]})
    with torch.device("meta"):
        model = M.TinyLlama(cfg)
    M.apply(model, plan)
    model.to_empty(device="cpu")
    assert model.layers[1].k_table.tolist() == list(plan.layers[1].k_by_tokens)
    ref = M.apply(_model(), plan)
    torch.nn.init.normal_(ref.layers[1].router.weight)
    model.load_state_dict(ref.state_dict())
    ids, route = _batch(b=2)
    valid = torch.ones_like(route)
    valid[1, 6:23] = False
    with torch.no_grad():
        assert torch.equal(model(ids, route, valid), ref(ids, route, valid))


def test_masks_and_positions_shared_by_the_batch_broadcast_or_are_refused() -> None:
    ids, mask = _batch(b=3)
    mask[1, 3] = False  # rows differ: row 1's span is shifted by one
    mask[1, 23] = True
    model = _model()
    plan = M.plan(num_layers=4, tokens=20, schedule={"kind": "explicit", "ratios": [1, 0.45, 1, 1]})
    layer = M.MoDLayer(
        model.layers[1], k=9, tokens=20, hidden_size=32, k_by_tokens=plan.layers[1].k_by_tokens
    )
    torch.nn.init.normal_(layer.router.weight)
    x, pos = model.embed(ids), torch.arange(ids.shape[1])
    with torch.no_grad():
        full = layer(x, pos.expand(3, -1), route_mask=mask[0].expand(3, -1))
        # A [1, S] or [S] mask is every row's mask, as for positions.
        assert torch.equal(layer(x, pos, route_mask=mask[:1]), full)
        assert torch.equal(layer(x, pos, route_mask=mask[0]), full)
        # Each row computed alone agrees with the batch (no row is skipped;
        # close, not equal: a GEMM may sum in another order for another batch).
        batch = layer(x, pos, route_mask=mask)
        for b in range(3):
            torch.testing.assert_close(layer(x[b : b + 1], pos, route_mask=mask[b]), batch[b : b + 1])
        valid = torch.ones_like(mask)
        assert torch.equal(
            layer(x, pos, route_mask=mask, valid_mask=valid[:1]), layer(x, pos, route_mask=mask)
        )
        # Decoding (no route mask) takes [S] positions too.
        assert torch.equal(layer(x, pos), layer(x, pos.expand(3, -1)))
    for bad, err, match in (
        (mask[:2], ValueError, r"route_mask has shape \(2, 26\): expected \[26\], \[1, 26\] or \[3, 26\]"),
        (mask[:, :10], ValueError, r"route_mask has shape \(3, 10\)"),
        (mask.int(), TypeError, "route_mask has dtype torch.int32: expected torch.bool"),
    ):
        with pytest.raises(err, match=match):
            layer(x, pos, route_mask=bad)
    with pytest.raises(ValueError, match=r"valid_mask has shape \(2, 26\)"):
        layer(x, pos, route_mask=mask, valid_mask=mask[:2])
    with pytest.raises(ValueError, match=r"positions has shape \(3, 5\)"):
        layer(x, pos[:5].expand(3, -1))


def test_meta_init_then_assign_load_keeps_the_table() -> None:
    # The usual large-model load: build on meta, load with assign=True. The
    # table is not in the state dict, so it must come back from the plan.
    cfg = M.LlamaConfig(vocab_size=64, hidden_size=32, num_layers=4, num_heads=4, ffn_size=64)
    plan = M.plan(num_layers=4, tokens=20, schedule={"kind": "explicit", "ratios": [1, 0.45, 1, 1]})
    ref = M.apply(_model(), plan)
    torch.nn.init.normal_(ref.layers[1].router.weight)
    with torch.device("meta"):
        model = M.apply(M.TinyLlama(cfg), plan)
    model.load_state_dict(ref.state_dict(), assign=True)
    ids, route = _batch(b=2)
    valid = torch.ones_like(route)
    valid[1, 6:23] = False
    with torch.no_grad():
        assert torch.equal(model(ids, route, valid), ref(ids, route, valid))
    with torch.device("meta"):
        moved = M.apply(M.TinyLlama(cfg), plan)
    moved.load_state_dict(ref.state_dict(), assign=True)
    moved.to("cpu", torch.float64)  # nothing left on meta to copy out of
    assert moved.layers[1].k_table.device.type == "cpu"
    assert moved.layers[1].k_table.tolist() == list(plan.layers[1].k_by_tokens)


def test_router_starts_at_zero_after_any_reinitialisation() -> None:
    # Recipes that re-run every module's reset_parameters (meta init, then
    # to_empty) must leave the router at zero, so w = 1 exactly.
    cfg = M.LlamaConfig(vocab_size=64, hidden_size=32, num_layers=4, num_heads=4, ffn_size=64)
    with torch.device("meta"):
        model = M.apply(M.TinyLlama(cfg), M.plan(num_layers=4, tokens=20))
    model.to_empty(device="cpu")
    for m in model.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    routers = [m for m in model.modules() if isinstance(m, M.TokenRouter)]
    assert routers and not any(isinstance(c, torch.nn.Linear) for r in routers for c in r.modules())
    for r in routers:
        assert torch.count_nonzero(r.weight) == 0 and torch.count_nonzero(r.bias) == 0
        assert torch.equal(M.tanh_norm(r(torch.randn(2, 5, 32))), torch.ones(2, 5))


def test_apply_changes_nothing_when_it_refuses() -> None:
    plan = M.plan(num_layers=4, tokens=20, schedule={"kind": "explicit", "ratios": [0.5, 0.5, 0.5, 0.5]})
    model = _model()
    model.layers[3] = M.MoDLayer(model.layers[3], k=10, tokens=20, hidden_size=32)
    before = [type(layer) for layer in model.layers]
    with pytest.raises(ValueError, match="layer 3 is already an MoDLayer"):
        M.apply(model, plan)
    assert [type(layer) for layer in model.layers] == before


def test_per_sample_tables_by_default_where_they_fit() -> None:
    assert M.plan(num_layers=4, tokens=20).layers[1].k_by_tokens
    big = M.plan(num_layers=4, tokens=3_000_000)  # past the tables' limit: a plan without them
    assert big.layers[3].k > 0 and big.layers[3].k_by_tokens == ()
    with pytest.raises(rewarm.SpecError) as ei:
        M.plan(num_layers=4, tokens=3_000_000, per_sample=True)
    assert ei.value.field == "per_sample"
    # Python's default stays within the Go planner's limit: one routed layer of
    # two (prd, L = 2), so the limit is reached at twice what Python assumes.
    limit = M._plan.MAX_PER_SAMPLE_ENTRIES
    n = limit // 2 - 1
    assert len(M.plan(num_layers=2, tokens=n).layers[1].k_by_tokens) == n + 1
    assert M.plan(num_layers=2, tokens=n + 1).layers[1].k_by_tokens == ()
    assert len(M.plan(num_layers=2, tokens=limit - 1, per_sample=True).layers[1].k_by_tokens) == limit
    with pytest.raises(rewarm.SpecError):
        M.plan(num_layers=2, tokens=limit, per_sample=True)


def test_apply_follows_the_model_dtype() -> None:
    ids, mask = _batch()
    model = M.apply(_model().to(torch.bfloat16), M.plan(num_layers=4, tokens=20))
    routed = [layer for layer in model.layers if isinstance(layer, M.MoDLayer)]
    assert routed and all(layer.router.weight.dtype == torch.bfloat16 for layer in routed)
    assert model(ids, route_mask=mask).dtype == torch.bfloat16


def test_cli_plan_and_plot_plan(tmp_path) -> None:
    import subprocess

    out = subprocess.run(
        [rewarm.find_binary(), "plan", "--layers", "32", "--tokens", "576"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.splitlines() if line.strip() and line.split()[0].isdigit()]
    assert [int(r[3]) for r in rows] == VEC576
    assert "mean ratio 0.5375" in out.stdout
    png = tmp_path / "plan.png"
    r = subprocess.run(
        [rewarm.find_binary(), "plot-plan", "--buckets", "576,2880", "-o", str(png)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0 and png.read_bytes().startswith(b"\x89PNG")
    bad = subprocess.run(
        [rewarm.find_binary(), "plan", "--layers", "32", "--tokens", "576", "--schedule", "zig"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad.returncode == 1 and "schedule.kind" in bad.stderr


def test_hf_llama_recipe_routes_like_hf_on_the_kept_tokens() -> None:
    # Runs docs/mod.md's HF recipe, then checks one routed layer against HF's
    # own LlamaDecoderLayer run on the kept tokens at their original positions:
    # text rows equal its output, kept routable rows x + A + w·f, skipped w·x.
    from tests.test_docs import DOCS, blocks

    recipe = next(b for b in blocks((DOCS / "mod.md").read_text()) if "class HFHalves" in b.code)
    ns: dict = {"__name__": "__docs__"}
    exec(compile(recipe.code, "docs/mod.md", "exec"), ns)
    hf, plan = ns["hf"], ns["plan"]
    layers = hf.model.layers
    assert [isinstance(layer, M.MoDLayer) for layer in layers] == [lp.route for lp in plan.layers]
    # The routers are the model's: they train and save with it.
    routed = sum(lp.route for lp in plan.layers)
    assert sum(".router." in key for key in hf.state_dict()) == 2 * routed  # weight, bias
    params = {id(p) for p in hf.parameters()}
    assert all(id(layer.router.weight) in params for layer in layers if isinstance(layer, M.MoDLayer))
    i = next(lp.index for lp in plan.layers if lp.route and 0 < lp.k < 24)
    mod, k = layers[i], plan.layers[i].k
    hl = mod.block.layer  # HF's own decoder layer inside the wrapper
    torch.manual_seed(5)
    torch.nn.init.normal_(mod.router.weight)
    x, route = torch.randn(2, 30, 32), torch.zeros(2, 30, dtype=torch.bool)
    route[:, 3:27] = True
    pos = torch.arange(30).expand(2, 30)
    with torch.no_grad():
        out = mod(x, pos, route_mask=route)
        r = mod.router(x).float()
        w = 0.2 * torch.tanh(r) + 1
        for b in range(2):
            cand = [t for t in range(30) if route[b, t]]
            chosen = set(sorted(cand, key=lambda t: (-r[b, t].item(), t))[:k])
            keep = [t for t in range(30) if not route[b, t] or t in chosen]
            mlp: list[torch.Tensor] = []
            hook = hl.mlp.register_forward_hook(lambda m, i, o, mlp=mlp: mlp.append(o))
            sub, p = x[b : b + 1, keep], torch.tensor([keep])
            y = hl(sub, position_ids=p, position_embeddings=hf.model.rotary_emb(sub, p))
            hook.remove()
            y = (y[0] if isinstance(y, tuple) else y)[0]
            f = mlp[0][0]
            for j, t in enumerate(keep):
                want = y[j] + (w[b, t] - 1) * f[j] if route[b, t] else y[j]
                torch.testing.assert_close(out[b, t], want, rtol=1e-5, atol=1e-5)
            for t in set(cand) - chosen:
                torch.testing.assert_close(out[b, t], w[b, t] * x[b, t])
