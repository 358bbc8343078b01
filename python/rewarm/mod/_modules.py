"""The PyTorch side of Mixture-of-Depths: a router, TanhNorm, and a layer
that executes a plan's k with static shapes (p-MoD's STRing semantics).

Per routed layer, with x the layer input and w = scale·tanh(router(x)) + 1:

- a kept routable token gets x + Attn + w·MLP,
- a skipped routable token gets w·x,
- every other token (text, system prompt) takes the normal layer.

Selection is top-k of the router logits over the routable tokens (fp32,
non-routable ones masked to -inf), ties going to the lower position, then
the kept tokens are gathered in their original order (so causal attention
and RoPE positions are the original ones), run through the block, and
scattered back. forward uses no .item(), .tolist() or boolean-mask indexing,
so it compiles to one static graph per (batch, sequence, k).
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn


class HalvesBlock(Protocol):
    """A decoder block that exposes its halves: for input x and positions it
    returns (A, f) with A = Attn(norm1(x)) and f = MLP(norm2(x + A)), so the
    block's output is x + A + f."""

    def forward_halves(
        self, x: torch.Tensor, positions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


class TokenRouter(nn.Module):
    """A zero-initialised Linear(d, 1) on the layer input: logits r, so the
    TanhNorm weight is exactly 1 at initialisation."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.proj = nn.Linear(hidden_size, 1, bias=True)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).squeeze(-1)


def tanh_norm(r: torch.Tensor, scale: float = 0.2) -> torch.Tensor:
    """TanhNorm: w = scale·tanh(r) + 1, bounded to (1 − scale, 1 + scale)."""
    return scale * torch.tanh(r) + 1.0


class MoDLayer(nn.Module):
    """Wraps a block so it processes only the top-k of its routable tokens.

    k and tokens (the bucket's routable count N) are fixed at construction:
    each forward expects exactly N routable positions per row of route_mask
    (pad to the bucket and pass valid_mask for the padding), so every shape
    is static.
    """

    def __init__(self, block: nn.Module, k: int, tokens: int, hidden_size: int, scale: float = 0.2) -> None:
        super().__init__()
        if not 0 <= k <= tokens:
            raise ValueError(f"k={k}: must be in [0, tokens={tokens}]")
        if not hasattr(block, "forward_halves"):
            raise TypeError(
                f"{type(block).__name__} has no forward_halves(x, positions) -> (attn_out, mlp_out); "
                "see docs/mod.md for an adapter"
            )
        self.block = block
        self.k = int(k)
        self.tokens = int(tokens)
        self.scale = float(scale)
        self.router = TokenRouter(hidden_size)

    def extra_repr(self) -> str:
        return f"k={self.k}, tokens={self.tokens}, scale={self.scale}"

    def forward(
        self,
        x: torch.Tensor,
        positions: torch.Tensor,
        route_mask: torch.Tensor | None = None,
        valid_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if route_mask is None:  # nothing routable (e.g. decoding): the normal layer
            a, f = self.block.forward_halves(x, positions)
            return (x + a) + f
        b, s, d = x.shape
        others = s - self.tokens
        if positions.dim() == 1:
            positions = positions.unsqueeze(0).expand(b, s)
        r = self.router(x)
        w = tanh_norm(r, self.scale)
        score = r.float().masked_fill(~route_mask, float("-inf"))
        if valid_mask is not None:
            score = score.masked_fill(~valid_mask, float("-inf"))
        # A stable descending sort: equal logits keep the lower position.
        top = torch.sort(score, dim=1, descending=True, stable=True).indices[:, : self.k]
        # The non-routable positions, in order (False sorts first, stably).
        rest = torch.sort(route_mask.to(torch.int8), dim=1, stable=True).indices[:, :others]
        keep = torch.cat([rest, top], dim=1).sort(dim=1).values
        keep_d = keep.unsqueeze(-1).expand(-1, -1, d)
        xk = x.gather(1, keep_d)
        a, f = self.block.forward_halves(xk, positions.gather(1, keep))
        # g is w on routable tokens and 1 elsewhere: skipped tokens become w·x,
        # kept ones x + Attn + g·MLP (g = 1 exactly for the others).
        g = torch.where(route_mask, w, torch.ones_like(w)).unsqueeze(-1)
        kept = (xk + a) + g.gather(1, keep.unsqueeze(-1)) * f
        # One full-size pass for the skipped tokens, then the kept rows in place.
        return (g * x).scatter_(1, keep_d, kept)
