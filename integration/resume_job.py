"""Train a tiny model, optionally saving or loading a checkpoint; log the LR
each update used (and the loss) as JSON."""

from __future__ import annotations

import argparse
import json

import torch

import rewarm

DATA_STEPS = 300
SPEC = {"kind": "cosine", "peak_lr": 0.05, "min_lr": 0.001, "warmup_steps": 20, "total_steps": 250}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--save")
    ap.add_argument("--load")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    opt = rewarm.wrap(torch.optim.AdamW(model.parameters(), lr=0.0), schedule=SPEC, backend=args.backend)
    if args.load:
        ck = torch.load(args.load, weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
    g = torch.Generator().manual_seed(1)
    xs = torch.randn(DATA_STEPS, 16, 4, generator=g)  # same data whatever --steps is
    lrs, losses = [], []
    while opt.steps_applied < args.steps:
        n = opt.steps_applied
        x = xs[n]
        loss = (model(x) - x.sum(dim=1, keepdim=True)).pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
        lrs.append(opt.get_last_lr()[0])  # the rate this update used
        losses.append(loss.item())
    if args.save:
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, args.save)
    with open(args.log, "w") as f:
        json.dump(lrs, f)
    with open(args.log + ".loss", "w") as f:
        json.dump(losses, f)


if __name__ == "__main__":
    main()
