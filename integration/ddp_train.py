"""(c) A 2-rank gloo DDP job whose LR comes from `rewarm serve` (REWARM_SOCKET).
Each rank writes the LR of every update to <out>/rank<R>.json."""

from __future__ import annotations

import argparse
import json
import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

import rewarm

SPEC = {
    "kind": "cosine",
    "peak_lr": 0.02,
    "min_lr": 0.002,
    "warmup_steps": 25,
    "warmup_start_lr": 0.0,
    "total_steps": 180,
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=200)
    args = ap.parse_args()
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = DDP(torch.nn.Linear(8, 1))
    opt = rewarm.wrap(
        torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9),
        schedule=SPEC,
        backend="socket",
        name=f"rank{rank}",
    )
    g = torch.Generator().manual_seed(100 + rank)
    lrs, losses = [], []
    for _ in range(args.steps):
        x = torch.randn(32, 8, generator=g)
        loss = (model(x) - x[:, :1]).pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
        lrs.append(opt.get_last_lr()[0])  # the rate this update used
        losses.append(loss.item())
    # Parameters must agree across ranks after DDP training.
    w = model.module.weight.detach().clone()
    dist.all_reduce(w)
    same = torch.allclose(w / dist.get_world_size(), model.module.weight.detach())
    with open(os.path.join(args.out, f"rank{rank}.json"), "w") as f:
        json.dump(
            {
                "lrs": lrs,
                "losses": losses,
                "backend": opt.backend,
                "params_in_sync": same,
                "world_size": dist.get_world_size(),
            },
            f,
        )
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
