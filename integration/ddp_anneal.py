"""Two ranks, each with its own in-process schedule: rank 0 alone decides to
anneal at step 120 and broadcasts the re-plan, so every rank switches at the
same update. Each rank writes the LR of every update to <out>/rank<R>.json."""

from __future__ import annotations

import argparse
import json
import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

import rewarm

SPEC = {
    "kind": "infinite",
    "peak_lr": 0.02,
    "const_lr": 0.01,
    "min_lr": 0.001,
    "warmup_steps": 20,
    "cooldown_steps": 50,
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = DDP(torch.nn.Linear(4, 1))
    opt = rewarm.wrap(torch.optim.SGD(model.parameters(), lr=0.0), schedule=SPEC, backend="inprocess")
    lrs = []
    for n in range(200):
        # Only rank 0 knows about the decision (say, from an operator or a
        # metric); the others pass nothing.
        decision = [{"op": "anneal", "steps": 50, "shape": "cosine"}] if rank == 0 and n == 120 else None
        opt.broadcast_replans(decision if rank == 0 else None)
        model(torch.randn(8, 4)).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
        lrs.append(opt.get_last_lr()[0])  # the rate this update used
    with open(os.path.join(args.out, f"rank{rank}.json"), "w") as f:
        json.dump(lrs, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
