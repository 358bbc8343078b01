"""The PyTorch side of Mixture-of-Depths: a router, TanhNorm, and a layer
that executes a plan's k with static shapes (p-MoD's STRing semantics).

Per routed layer, with x the layer input and w = scale·tanh(router(x)) + 1:

- a kept routable token gets x + Attn + w·MLP,
- a skipped routable token gets w·x,
- every other token (text, system prompt) takes the normal layer.

Selection is top-k of the router logits (fp32) over the routable tokens,
ties going to the lower position, then
the kept tokens are gathered in their original order (so causal attention
and RoPE positions are the original ones), run through the block, and
scattered back. forward uses no .item(), .tolist() or boolean-mask indexing,
so it compiles to one static graph per (batch, sequence, k).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any, Protocol, cast

import torch
from torch import nn
from torch.nn import functional as F

from rewarm._errors import SpecError


class HalvesBlock(Protocol):
    """A decoder block that exposes its halves: for input x and positions it
    returns (A, f) with A = Attn(norm1(x)) and f = MLP(norm2(x + A)), so the
    block's output is x + A + f."""

    def forward_halves(
        self, x: torch.Tensor, positions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


class TokenRouter(nn.Module):
    """A zero-initialised linear map d -> 1 on the layer input: logits r, so
    the TanhNorm weight is exactly 1 at initialisation.

    It holds its own weight and bias rather than an nn.Linear, so init passes
    that re-initialise every nn.Linear (meta-device recipes, HF's
    _init_weights) leave it alone; reset_parameters zeroes it again."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.in_features = int(hidden_size)
        self.weight = nn.Parameter(torch.empty(1, self.in_features))
        self.bias = nn.Parameter(torch.empty(1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.weight)
        nn.init.zeros_(self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias).squeeze(-1)


def tanh_norm(r: torch.Tensor, scale: float = 0.2) -> torch.Tensor:
    """TanhNorm: w = scale·tanh(r) + 1, bounded to (1 − scale, 1 + scale)."""
    return scale * torch.tanh(r) + 1.0


class MoDLayer(nn.Module):
    """Wraps a block so it processes only the top-k of its routable tokens.

    k and tokens (the bucket's routable count N) are fixed at construction:
    each forward expects exactly N routable positions per row of route_mask,
    so every shape is static. A sample with fewer routable tokens pads its
    span to N and marks the padding False in valid_mask; it then keeps
    k_b = k_by_tokens[N_b] of its N_b valid tokens (the plan's per-sample
    table, p-MoD's per-sample k). The k − k_b spare slots run after every
    real token of the compacted sequence, where causal attention keeps them
    from reaching it, and are written back unchanged (w·x).
    """

    k_table: torch.Tensor | None

    def __init__(
        self,
        block: nn.Module,
        k: int,
        tokens: int,
        hidden_size: int,
        scale: float = 0.2,
        k_by_tokens: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        k, tokens, hidden_size = (
            _int_arg(name, v) for name, v in (("k", k), ("tokens", tokens), ("hidden_size", hidden_size))
        )
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 <= scale < 1:
            raise SpecError(f"scale={scale!r}: must be in [0, 1) (w = scale·tanh(r) + 1 stays positive)")
        if hidden_size < 1:
            raise SpecError(f"hidden_size={hidden_size}: must be >= 1")
        if tokens < 0:
            raise SpecError(f"tokens={tokens}: must be >= 0")
        if not 0 <= k <= tokens:
            raise SpecError(f"k={k}: must be in [0, tokens={tokens}]")
        if not hasattr(block, "forward_halves"):
            raise TypeError(
                f"{type(block).__name__} has no forward_halves(x, positions) -> (attn_out, mlp_out); "
                "see docs/mod.md for an adapter"
            )
        self.block = block
        self.k = int(k)
        self.tokens = int(tokens)
        self.scale = float(scale)
        like = next(block.parameters(), None)
        self.router = TokenRouter(hidden_size)
        if like is not None:
            self.router.to(device=like.device, dtype=like.dtype)
        table = None
        # The plan's values, kept here too: not part of state_dict, and a move
        # that leaves buffers uninitialised (meta, then to_empty) must not lose them.
        self._k_values: tuple[int, ...] | None = None
        if k_by_tokens is not None and len(k_by_tokens) > 0:
            if len(k_by_tokens) != tokens + 1 or k_by_tokens[-1] != k:
                raise SpecError(
                    f"k_by_tokens: {len(k_by_tokens)} entries ending at {k_by_tokens[-1]}; "
                    f"need tokens + 1 = {tokens + 1} ending at k = {k} (the plan's table for this bucket)"
                )
            self._k_values = tuple(_int_arg(f"k_by_tokens[{i}]", v) for i, v in enumerate(k_by_tokens))
            bad = next((i for i, v in enumerate(self._k_values) if not 0 <= v <= min(i, k)), None)
            if bad is not None:
                raise SpecError(
                    f"k_by_tokens[{bad}] = {self._k_values[bad]}: must be in [0, min({bad}, k={k})] "
                    "(a sample keeps at most its own routable tokens and at most k)"
                )
            device = like.device if like is not None else None
            table = torch.tensor(self._k_values, dtype=torch.int64, device=device)
        self.register_buffer("k_table", table, persistent=False)

    def _table_on(self, device: torch.device) -> torch.Tensor:
        assert self._k_values is not None
        return torch.tensor(self._k_values, dtype=torch.int64, device=device)

    def _apply(self, fn: Any, recurse: bool = True) -> MoDLayer:
        # A table left on meta (meta init, then load_state_dict(assign=True))
        # cannot be copied out: drop it and rebuild it from the plan's values
        # beside the router, wherever that went.
        if self.k_table is not None and self.k_table.device.type == "meta":
            self._buffers["k_table"] = None
        out = super()._apply(fn, recurse)
        if self._k_values is not None:
            self.k_table = self._table_on(self.router.weight.device)
        return out

    def extra_repr(self) -> str:
        return f"k={self.k}, tokens={self.tokens}, scale={self.scale}"

    def forward(
        self,
        x: torch.Tensor,
        positions: torch.Tensor,
        route_mask: torch.Tensor | None = None,
        valid_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        block = cast(HalvesBlock, self.block)
        if x.dim() != 3:
            raise ValueError(f"x has shape {tuple(x.shape)}: expected [batch, sequence, hidden]")
        b, s, d = x.shape
        positions = _rows("positions", positions, b, s)
        if route_mask is None:  # nothing routable (e.g. decoding): the normal layer
            if valid_mask is not None:
                raise ValueError("valid_mask without route_mask: it marks padding inside the routable span")
            a, f = block.forward_halves(x, positions)
            return (x + a) + f
        route_mask = _rows("route_mask", route_mask, b, s, torch.bool)
        if valid_mask is not None:
            valid_mask = _rows("valid_mask", valid_mask, b, s, torch.bool)
        if d != self.router.in_features:
            raise ValueError(f"x has hidden size {d}, this layer's router {self.router.in_features}")
        others = s - self.tokens
        if others < 0:
            raise ValueError(f"a sequence of {s} tokens cannot hold the bucket's {self.tokens} routable ones")
        if valid_mask is not None and self.k_table is None:
            raise ValueError(
                "valid_mask needs the plan's per-sample k: build the layer with apply(), or pass "
                "k_by_tokens=layer_plan.k_by_tokens from plan(..., per_sample=True)"
            )
        # Checked on the device, without a host sync.
        torch._assert_async(
            (route_mask.sum(1) == self.tokens).all(),
            f"route_mask: every row must mark exactly tokens={self.tokens} routable positions",
        )
        r = self.router(x)
        w = tanh_norm(r, self.scale)
        if others + self.k == 0:
            # Every token is routable and none is kept: each becomes w·x, and
            # the block, which need not take an empty sequence, is not run.
            # Its parameters still join the graph, through empty slices
            # (exactly 0 whatever they hold), so each gets a zero gradient
            # as if it had run: DDP without find_unused_parameters needs one.
            # A DTensor parameter (FSDP2, tensor parallel) is sliced in its
            # local shard, since a DTensor does not add to a plain tensor.
            out = w.unsqueeze(-1) * x
            if torch.is_grad_enabled():
                empty = [
                    _local(p).reshape(-1)[:0].sum().to(device=out.device, dtype=torch.float32)
                    for p in self.block.parameters()
                    if p.requires_grad
                ]
                if empty:
                    out = out + torch.stack(empty).sum().to(out.dtype)
            return out
        # The non-routable positions, then the routable ones, each in order
        # (False sorts first, stably).
        order = torch.sort(route_mask.to(torch.int8), dim=1, stable=True).indices
        rest, routable = order[:, :others], order[:, others:]
        score = r.float().gather(1, routable)
        if valid_mask is not None:
            valid = valid_mask.gather(1, routable)
            score = score.masked_fill(~valid, float("-inf"))
        # A stable descending sort: equal logits keep the lower position.
        top = routable.gather(1, torch.sort(score, dim=1, descending=True, stable=True).indices[:, : self.k])
        spare = None
        if valid_mask is None:
            keep = torch.cat([rest, top], dim=1).sort(dim=1).values
        else:
            # Ranks at or past k_b are spare: offset by s they sort after
            # every real token, in the same pass that orders the real ones.
            k_table = self.k_table
            assert k_table is not None  # checked above
            if k_table.device.type == "meta":  # loaded with assign=True after meta init
                self.k_table = k_table = self._table_on(self.router.weight.device)
            k_b = k_table[valid.sum(1)]
            beyond = torch.arange(self.k, device=x.device) >= k_b.unsqueeze(1)
            key = torch.cat([rest, top + beyond * s], dim=1).sort(dim=1).values
            spare = key >= s
            keep = key - spare * s
        # Rows move by index_select/index_copy_ on the flattened [b·s, d] view:
        # several times faster on CPU than gather/scatter with an index
        # expanded over d, and the same values.
        flat = (keep + torch.arange(b, device=x.device).unsqueeze(1) * s).reshape(-1)
        xk = x.reshape(b * s, d).index_select(0, flat).view(b, keep.shape[1], d)
        a, f = block.forward_halves(xk, positions.gather(1, keep))
        # g is w on routable tokens and 1 elsewhere: skipped tokens become w·x,
        # kept ones x + Attn + g·MLP (g = 1 exactly for the others).
        g = torch.where(route_mask, w, torch.ones_like(w)).unsqueeze(-1)
        gk = g.gather(1, keep.unsqueeze(-1))
        kept = (xk + a) + gk * f
        if spare is not None:
            kept = torch.where(spare.unsqueeze(-1), gk * xk, kept)
        # One full-size pass for the skipped tokens, then the kept rows in place.
        # reshape, not view: g·x keeps x's layout, which may not be row-major
        # (a transposed patch embedding, say); then it copies once.
        out = (g * x).reshape(b * s, d).index_copy_(0, flat, kept.reshape(-1, d))
        return out.view(b, s, d)


def _local(p: torch.Tensor) -> torch.Tensor:
    """A DTensor's local shard (differentiable), or p itself."""
    to_local = getattr(p, "to_local", None)
    return to_local() if callable(to_local) else p


def _int_arg(name: str, v: Any) -> int:
    """v as an int, refusing bools and anything without an exact integer value
    (a float, or a float tensor, which has __index__ but fails it)."""
    if isinstance(v, bool):
        raise TypeError(f"{name}={v!r}: expected an int")
    try:
        return operator.index(v)
    except TypeError:
        raise TypeError(f"{name}={v!r}: expected an int") from None


def _rows(name: str, t: torch.Tensor, b: int, s: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """t as [b, s]: a [s] or [1, s] tensor is shared by every row."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}={t!r:.60}: expected a tensor")
    if dtype is not None and t.dtype != dtype:
        raise TypeError(f"{name} has dtype {t.dtype}: expected {dtype}")
    if t.dim() == 1:
        t = t.unsqueeze(0)
    if t.dim() != 2 or t.shape[1] != s or t.shape[0] not in (1, b):
        raise ValueError(
            f"{name} has shape {tuple(t.shape)}: expected [{s}], [1, {s}] or [{b}, {s}] for x of batch {b}"
        )
    return t.expand(b, s)
