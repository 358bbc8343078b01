"""Mixture-of-Depths end to end on CPU: a tiny Llama-style decoder trains for
300 steps with the p-MoD plan served by `rewarm serve`, and an MoD layer
compiles with torch.compile(fullgraph=True)."""

from __future__ import annotations

import pytest
import torch

import rewarm
import rewarm.mod as M

TEXT, ROUTABLE = 8, 48


def make_batch(g: torch.Generator, b: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """A learnable sequence task: a prompt, then an 'image' span that repeats
    a short pattern, then a question that copies the prompt."""
    prompt = torch.randint(0, 32, (b, 4), generator=g)
    pattern = torch.randint(32, 64, (b, 6), generator=g)
    span = pattern.repeat(1, ROUTABLE // 6)
    ids = torch.cat([prompt, span, prompt], dim=1)
    mask = torch.zeros_like(ids, dtype=torch.bool)
    mask[:, 4 : 4 + ROUTABLE] = True
    return ids, mask


def test_trains_with_a_plan_from_the_sidecar(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    with rewarm.Sidecar() as sc:
        monkeypatch.setenv("REWARM_SOCKET", sc.path)
        plan = M.plan(num_layers=6, tokens=ROUTABLE, text_tokens=TEXT, backend="socket")
        model = M.apply(
            M.TinyLlama(
                M.LlamaConfig(vocab_size=64, hidden_size=64, num_layers=6, num_heads=4, ffn_size=172)
            ),
            plan,
        )
        routed = [lp.index for lp in plan.layers if lp.route]
        assert routed and all(isinstance(model.layers[i], M.MoDLayer) for i in routed)
        opt = rewarm.wrap(
            torch.optim.AdamW(model.parameters()),
            backend="socket",
            schedule={
                "kind": "cosine",
                "peak_lr": 3e-3,
                "min_lr": 3e-4,
                "warmup_steps": 30,
                "total_steps": 300,
            },
        )
        g = torch.Generator().manual_seed(1)
        losses = []
        for _ in range(300):
            ids, mask = make_batch(g)
            logits = model(ids[:, :-1], route_mask=mask[:, :-1])
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())
            loss.backward()
            opt.step()
            opt.zero_grad()
            losses.append(loss.item())
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last < 0.6 * first, (first, last)
    # The routers learned something: their weights moved away from zero.
    assert any(model.layers[i].router.weight.abs().sum() > 0 for i in routed)


def test_mod_layer_compiles_fullgraph_on_cpu() -> None:
    torch.manual_seed(0)
    model = M.TinyLlama(M.LlamaConfig(vocab_size=64, hidden_size=32, num_layers=1, num_heads=4, ffn_size=64))
    layer = M.MoDLayer(model.layers[0], k=5, tokens=20, hidden_size=32)
    torch.nn.init.normal_(layer.router.weight, std=0.1)
    x = torch.randn(2, 26, 32)
    pos = torch.arange(26).expand(2, 26)
    mask = torch.zeros(2, 26, dtype=torch.bool)
    mask[:, 3:23] = True
    eager = layer(x, pos, route_mask=mask)
    compiled = torch.compile(layer, fullgraph=True)  # fails on any graph break
    torch.testing.assert_close(compiled(x, pos, route_mask=mask), eager, rtol=1e-5, atol=1e-5)
    # The padded-bucket path: per-sample k from the plan's table.
    lp = M.plan(num_layers=2, tokens=20, schedule={"kind": "explicit", "ratios": [1, 0.25]}).layers[1]
    padded = M.MoDLayer(model.layers[0], k=lp.k, tokens=20, hidden_size=32, k_by_tokens=lp.k_by_tokens)
    padded.router.load_state_dict(layer.router.state_dict())
    valid = mask.clone()
    valid[1, 10:23] = False
    eager = padded(x, pos, route_mask=mask, valid_mask=valid)
    compiled = torch.compile(padded, fullgraph=True)
    torch.testing.assert_close(
        compiled(x, pos, route_mask=mask, valid_mask=valid), eager, rtol=1e-5, atol=1e-5
    )
