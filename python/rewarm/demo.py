"""`rewarm demo`: train a tiny next-token model on CPU with a rewarm schedule.

The corpus is generated deterministically (a random second-order Markov chain
over 32 symbols), so the run needs no downloads and its loss floor is known:
the chain's conditional entropy.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import torch
from torch import nn

import rewarm

VOCAB = 32
CONTEXT = 4


def make_corpus(n_tokens: int, seed: int) -> tuple[torch.Tensor, float]:
    """Tokens from a sparse second-order Markov chain, and its entropy in nats."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(VOCAB, VOCAB, VOCAB, generator=g) * 3.0
    probs = torch.softmax(logits, dim=-1)
    entropy = float(-(probs * probs.log()).sum(-1).mean())
    tokens = torch.empty(n_tokens, dtype=torch.long)
    tokens[:2] = torch.randint(VOCAB, (2,), generator=g)
    u = torch.rand(n_tokens, generator=g)
    cdf = probs.cumsum(-1)
    for i in range(2, n_tokens):
        row = cdf[tokens[i - 2], tokens[i - 1]]
        tokens[i] = min(int(torch.searchsorted(row, u[i])), VOCAB - 1)
    return tokens, entropy


class TinyLM(nn.Module):
    def __init__(self, dim: int = 64) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, dim)
        self.mlp = nn.Sequential(nn.Linear(CONTEXT * dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, VOCAB))

    def forward(self, ctx: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.embed(ctx).flatten(1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="rewarm demo", description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--peak-lr", type=float, default=3e-3)
    ap.add_argument("--warmup-steps", type=int, default=30)
    ap.add_argument(
        "--backend",
        choices=["auto", "inprocess", "socket"],
        default="auto",
        help="socket starts a private `rewarm serve` unless REWARM_SOCKET is set",
    )
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.steps < 1 or args.warmup_steps > args.steps:
        ap.error("need --steps >= 1 and --warmup-steps <= --steps")
    torch.manual_seed(args.seed)
    torch.set_num_threads(min(2, os.cpu_count() or 1))

    sidecar = None
    if args.backend == "socket" and not os.environ.get("REWARM_SOCKET"):
        sidecar = rewarm.Sidecar()
        os.environ["REWARM_SOCKET"] = sidecar.path
    try:
        return train(args)
    finally:
        if sidecar is not None:
            sidecar.stop()


def train(args: argparse.Namespace) -> int:
    tokens, entropy = make_corpus(60_000, args.seed)
    split = 50_000
    windows = tokens.unfold(0, CONTEXT + 1, 1)
    train_w, val_w = windows[:split], windows[split:]
    schedule = {
        "kind": "cosine",
        "peak_lr": args.peak_lr,
        "min_lr": args.peak_lr / 10,
        "warmup_steps": args.warmup_steps,
        "total_steps": args.steps,
    }
    model = TinyLM()
    opt = rewarm.wrap(
        torch.optim.AdamW(model.parameters(), weight_decay=0.01), schedule=schedule, backend=args.backend
    )
    print(
        f"rewarm demo: {sum(p.numel() for p in model.parameters()):,} parameters, {args.steps} steps, "
        f"backend={opt.backend}, schedule={schedule}"
    )
    print(f"corpus entropy (best achievable loss): {entropy:.3f} nats\n")

    def val_loss() -> float:
        with torch.no_grad():
            return float(nn.functional.cross_entropy(model(val_w[:, :-1]), val_w[:, -1]))

    g = torch.Generator().manual_seed(args.seed + 1)
    first = val_loss()
    start = time.perf_counter()
    width = len(str(args.steps))
    for n in range(args.steps):
        batch = train_w[torch.randint(len(train_w), (args.batch_size,), generator=g)]
        loss = nn.functional.cross_entropy(model(batch[:, :-1]), batch[:, -1])
        loss.backward()
        opt.step()
        opt.zero_grad()
        done = n + 1
        if done % args.log_every == 0 or done == args.steps:
            ms = (time.perf_counter() - start) / done * 1e3
            bar = "#" * (20 * done // args.steps)
            print(
                f"[{bar:<20s}] step {done:>{width}}/{args.steps}  lr {opt.param_groups[0]['lr']:.3e}  "
                f"loss {loss.item():.4f}  ({ms:.1f} ms/step)",
                flush=True,
            )
    last = val_loss()
    print(
        f"\nvalidation loss {first:.4f} -> {last:.4f} (entropy floor {entropy:.3f}) in "
        f"{time.perf_counter() - start:.1f} s"
    )
    if not (math.isfinite(last) and last < first):
        print("rewarm demo: the loss did not go down", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
