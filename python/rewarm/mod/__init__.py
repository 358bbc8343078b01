"""Mixture-of-Depths: per-layer token-retention plans from the Go planner
(``plan``) and the PyTorch modules that execute them (``MoDLayer``,
``apply``). See docs/mod.md."""

from __future__ import annotations

from torch import nn

from rewarm._errors import SpecError
from rewarm.mod._modules import HalvesBlock, MoDLayer, TokenRouter, tanh_norm
from rewarm.mod._plan import BucketPlan, LayerPlan, Plan, Summary, plan
from rewarm.mod.llama import LlamaConfig, TinyLlama


def apply(model: nn.Module, plan: Plan, tokens: int | None = None, scale: float = 0.2) -> nn.Module:
    """Wrap the routed layers of ``model.layers`` in MoDLayer, in place, with
    the k of the bucket for ``tokens`` routable tokens (default: the plan's
    first bucket). The blocks must expose ``forward_halves``; the model must
    pass ``route_mask`` (and optionally ``valid_mask``) to its layers, as
    TinyLlama does. Returns the model."""
    if not isinstance(plan, Plan):
        raise TypeError(f"plan={plan!r:.80}: expected a rewarm.mod.Plan (from rewarm.mod.plan(...))")
    layers = getattr(model, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise TypeError(f"{type(model).__name__} has no `layers` ModuleList to wrap")
    bucket = plan.for_tokens(tokens) if tokens is not None else plan.buckets[0]
    if len(bucket.layers) != len(layers):
        raise SpecError(f"the plan has {len(bucket.layers)} layers, the model {len(layers)}")
    hidden = getattr(getattr(model, "config", None), "hidden_size", None)
    wrapped = {}
    # Every layer is wrapped before any is replaced, so a refusal leaves the model as it was.
    for lp in bucket.layers:
        if not lp.route:
            continue
        block = layers[lp.index]
        if isinstance(block, MoDLayer):
            raise SpecError(f"layer {lp.index} is already an MoDLayer")
        d = hidden
        if d is None:
            first = next(block.parameters(), None)
            if first is None:
                raise SpecError(
                    f"layer {lp.index} has no parameters to read the hidden size from, "
                    "and the model has no config.hidden_size"
                )
            d = first.shape[-1]
        wrapped[lp.index] = MoDLayer(
            block, k=lp.k, tokens=bucket.tokens, hidden_size=int(d), scale=scale, k_by_tokens=lp.k_by_tokens
        )
    for i, layer in wrapped.items():
        layers[i] = layer
    return model


__all__ = [
    "BucketPlan",
    "HalvesBlock",
    "LayerPlan",
    "LlamaConfig",
    "MoDLayer",
    "Plan",
    "Summary",
    "TinyLlama",
    "TokenRouter",
    "apply",
    "plan",
    "tanh_norm",
]
