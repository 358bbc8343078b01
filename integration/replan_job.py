"""Train a tiny model while applying re-plans at chosen steps; optionally save
or load a checkpoint. Logs the LR of every update as JSON."""

from __future__ import annotations

import argparse
import json

import torch

import rewarm

SPEC = {"kind": "cosine", "peak_lr": 0.05, "min_lr": 0.002, "warmup_steps": 20, "total_steps": 250}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", default="inprocess")
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--replans", default="[]", help='JSON list of {"at": S, "op": ..., args...}')
    ap.add_argument("--save")
    ap.add_argument("--load")
    args = ap.parse_args()
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = rewarm.wrap(torch.optim.SGD(model.parameters(), lr=0.0), schedule=SPEC, backend=args.backend)
    if args.load:
        ck = torch.load(args.load, weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
    pending = {r.pop("at"): r for r in json.loads(args.replans)}
    lrs = []
    while opt.steps_applied < args.steps:
        n = opt.steps_applied
        if n in pending:
            r = dict(pending[n])
            opt.replan(r.pop("op"), **r)
        model(torch.ones(3, 4)).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
        lrs.append(opt.get_last_lr()[0])  # the rate this update used
    if args.save:
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, args.save)
    with open(args.log, "w") as f:
        json.dump(lrs, f)


if __name__ == "__main__":
    main()
