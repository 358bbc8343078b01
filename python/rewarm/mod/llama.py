"""A small Llama-style decoder (RMSNorm, RoPE, causal attention, SwiGLU) whose
blocks expose their attention and MLP halves, for MoD tests and examples.
It needs only torch. With valid_mask, padding (False) is hidden from the
real tokens in every layer and takes no position."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class LlamaConfig:
    vocab_size: int = 256
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    ffn_size: int = 344
    rope_theta: float = 10000.0


class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotary embedding at explicit positions. x: [B, H, S, hd], positions: [B, S]."""
    hd = x.shape[-1]
    inv = 1.0 / (theta ** (torch.arange(0, hd, 2, device=x.device, dtype=torch.float32) / hd))
    ang = positions.to(torch.float32).unsqueeze(-1) * inv  # [B, S, hd/2]
    cos, sin = ang.cos().unsqueeze(1).to(x.dtype), ang.sin().unsqueeze(1).to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)


class Block(nn.Module):
    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        d = cfg.hidden_size
        self.cfg = cfg
        self.input_layernorm = RMSNorm(d)
        self.post_attention_layernorm = RMSNorm(d)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.o = nn.Linear(d, d, bias=False)
        self.gate = nn.Linear(d, cfg.ffn_size, bias=False)
        self.up = nn.Linear(d, cfg.ffn_size, bias=False)
        self.down = nn.Linear(cfg.ffn_size, d, bias=False)

    def attention(
        self, x: torch.Tensor, positions: torch.Tensor, valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        b, s, d = x.shape
        h = self.cfg.num_heads
        q, k, v = self.qkv(x).view(b, s, 3, h, d // h).permute(2, 0, 3, 1, 4)
        q, k = rope(q, positions, self.cfg.rope_theta), rope(k, positions, self.cfg.rope_theta)
        if valid is None:
            # The sequence is in ascending original order, so plain causal
            # attention equals the full causal mask restricted to these tokens.
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            # Padding (valid False) is hidden from every other token; each
            # token still sees itself, so no row is empty (that would be NaN).
            eye = torch.eye(s, dtype=torch.bool, device=x.device)
            causal = torch.ones(s, s, dtype=torch.bool, device=x.device).tril()
            mask = causal & (valid[:, None, None, :] | eye)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.o(y.transpose(1, 2).reshape(b, s, d))

    def mlp(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))

    def forward_halves(
        self, x: torch.Tensor, positions: torch.Tensor, valid: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.attention(self.input_layernorm(x), positions, valid)
        f = self.mlp(self.post_attention_layernorm(x + a))
        return a, f

    def forward(
        self,
        x: torch.Tensor,
        positions: torch.Tensor,
        route_mask: torch.Tensor | None = None,
        valid_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        # A dense layer hides padding itself; a routed one (MoDLayer) never
        # lets it reach a real token.
        real = _real_tokens(route_mask, valid_mask, x.shape[1])
        a, f = self.forward_halves(x, positions, None if real is None else real.expand(x.shape[0], -1))
        return (x + a) + f


def _real_tokens(
    route_mask: torch.Tensor | None, valid_mask: torch.Tensor | None, s: int
) -> torch.Tensor | None:
    """[B or 1, S] bool, False on padding: a routable position that valid_mask
    marks False (valid_mask speaks only for the routable span, as in MoDLayer)."""
    if valid_mask is None:
        return None
    valid = valid_mask.reshape(-1, s)
    return valid if route_mask is None else valid | ~route_mask.reshape(-1, s)


class TinyLlama(nn.Module):
    def __init__(self, cfg: LlamaConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = cfg or LlamaConfig()
        self.embed = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)

    def forward(
        self,
        input_ids: torch.Tensor,
        route_mask: torch.Tensor | None = None,
        valid_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        b, s = input_ids.shape
        if valid_mask is None:
            positions = torch.arange(s, device=input_ids.device).unsqueeze(0).expand(b, s)
        else:
            # Padding takes no position: the real tokens after it are numbered
            # as if it were absent (a padded sample matches the unpadded one).
            real = _real_tokens(route_mask, valid_mask, s)
            assert real is not None
            positions = (real.long().cumsum(1) - 1).clamp(min=0).expand(b, s)
        x = self.embed(input_ids)
        for layer in self.layers:
            x = layer(x, positions, route_mask=route_mask, valid_mask=valid_mask)
        return self.lm_head(self.norm(x))
