"""Each rank reads its replay batches through a DataLoader (ConcatDataset,
worker processes) and writes the global ids of every step to
<out>/rank<R>.json. With --stop-at S it checkpoints the sampler after S steps
and kills itself; with --resume it continues from that checkpoint."""

from __future__ import annotations

import argparse
import json
import os
import signal

import torch
import torch.distributed as dist
from torch.utils.data import ConcatDataset, DataLoader, TensorDataset

import rewarm

SIZES = {"pile": 3000, "slimpajama": 50000}
SPEC = {
    "sources": [{"name": k, "size": v} for k, v in SIZES.items()],
    "global_batch_size": 24,
    "seed": 2024,
    "stages": [
        {"name": "pretrain", "steps": 100, "mixture": {"pile": 1.0}},
        {"name": "cpt", "steps": 400, "mixture": {"slimpajama": 0.95, "pile": 0.05}},
    ],
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--stop-at", type=int)
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args()
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    # Dataset item = its own global id, so the batch tells which ids were read.
    ds = ConcatDataset(
        [
            TensorDataset(torch.arange(off, off + n))
            for off, n in zip([0, SIZES["pile"]], SIZES.values(), strict=True)
        ]
    )
    sampler = rewarm.ReplaySampler(SPEC)  # rank and world size from torch.distributed
    ck = os.path.join(args.out, "sampler.json")
    log = os.path.join(args.out, f"rank{rank}.json")
    steps: dict[int, list[int]] = {}
    if args.resume:
        with open(ck) as f:
            sampler.load_state_dict(json.load(f))
        if os.path.exists(log):
            with open(log) as f:
                steps = {int(k): v for k, v in json.load(f).items()}
    start = sampler.state_dict()["step"]
    loader = DataLoader(ds, batch_sampler=sampler, num_workers=args.workers)
    for i, (ids,) in enumerate(loader):
        step = start + i
        steps[step] = ids.tolist()
        if args.stop_at is not None and step + 1 == args.stop_at:
            with open(log, "w") as f:
                json.dump(steps, f)
            dist.barrier()
            if rank == 0:
                with open(ck, "w") as f:
                    json.dump({**sampler.state_dict(), "step": args.stop_at}, f)
            dist.barrier()
            os.kill(os.getpid(), signal.SIGKILL)
    with open(log, "w") as f:
        json.dump(steps, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
