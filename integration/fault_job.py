"""A 2-rank job that reads its LR and its replay batches from the sidecar at
REWARM_SOCKET, pacing itself so a test can kill and restart the sidecar
mid-run. Rank r writes <out>/rank<r>.json: the LR and the ids of every step,
and how often its client failed over and reconnected. With --poll it picks
up `rewarm ctl` controls every step."""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
import torch.distributed as dist

import rewarm

SCHEDULE = {
    "kind": "infinite",
    "peak_lr": 0.02,
    "const_lr": 0.01,
    "min_lr": 0.001,
    "warmup_steps": 20,
    "cooldown_steps": 60,
}
REPLAY = {
    "sources": [{"name": "old", "size": 5000}, {"name": "new", "size": 50000}],
    "global_batch_size": 16,
    "seed": 11,
    "stages": [{"steps": 100, "mixture": {"old": 1.0}}, {"steps": 400, "mixture": {"new": 0.9, "old": 0.1}}],
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--pace", type=float, default=0.0, help="seconds to sleep per step")
    ap.add_argument("--poll", action="store_true")
    ap.add_argument("--backend", default="socket")
    args = ap.parse_args()
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    # Small windows, so the clients talk to the sidecar all through the run.
    opt = rewarm.wrap(
        torch.optim.SGD(model.parameters(), lr=0.0),
        schedule=SCHEDULE,
        backend=args.backend,
        window=8,
        name="job",
    )
    sampler = rewarm.ReplaySampler(REPLAY, backend=args.backend, window=4)
    lrs, ids = [], []
    progress = os.path.join(args.out, f"progress{rank}")
    for step in range(args.steps):
        if args.poll:
            opt.poll_control()
        batch = sampler.batch(step)
        model(torch.ones(2, 4)).sum().backward()
        opt.step()
        opt.zero_grad()
        lrs.append(opt.get_last_lr()[0])  # the rate this update used
        ids.append(batch.tolist())
        with open(progress, "w") as f:
            f.write(str(step + 1))
        if args.pace:
            time.sleep(args.pace)
    t = opt._client.transport
    with open(os.path.join(args.out, f"rank{rank}.json"), "w") as f:
        json.dump(
            {
                "lrs": lrs,
                "ids": ids,
                "failovers": getattr(t, "failovers", 0),
                "reconnects": getattr(t, "reconnects", 0),
            },
            f,
        )
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
