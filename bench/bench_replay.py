"""Time to the first batch and peak memory: rewarm's ReplaySampler against
torch's RandomSampler + DistributedSampler, side by side, each case in a
fresh process so its peak RSS is its own. Then Megatron's greedy
blending-index build against rewarm's first batch (Go benchmarks, one run).
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BATCH = 1024
WORLD = 8


def child(kind: str, n: int) -> None:
    import torch
    from torch.utils.data import BatchSampler, DistributedSampler, RandomSampler

    import rewarm

    # Load the in-process extension (the Go runtime, which warms its request
    # handling as it loads) before the clock starts: a one-time cost per
    # process, like importing torch. It is measured and reported.
    t0 = time.perf_counter()
    rewarm.connect("inprocess").close()
    load = time.perf_counter() - t0

    def first_batch(seed: int) -> int:
        # Each sampler's first batch in the form it yields it: a list for
        # torch's, an int64 tensor for rewarm's.
        if kind == "torch RandomSampler":
            g = torch.Generator().manual_seed(seed)
            return len(next(iter(BatchSampler(RandomSampler(range(n), generator=g), BATCH, drop_last=True))))
        if kind == "torch DistributedSampler":
            it = iter(DistributedSampler(range(n), num_replicas=WORLD, rank=0, shuffle=True, seed=seed))
            return len([next(it) for _ in range(BATCH // WORLD)])
        spec = {
            "sources": [{"name": "new", "size": n - n // 20}, {"name": "old", "size": n // 20}],
            "global_batch_size": BATCH,
            "seed": seed,
            "stages": [
                {"steps": 10, "mixture": {"old": 1.0}},
                {"steps": 1000, "mixture": {"new": 0.95, "old": 0.05}},
            ],
        }
        s = rewarm.ReplaySampler(spec, rank=0, world_size=WORLD, backend="inprocess", window=1, start_step=10)
        return len(next(iter(s)))

    # Cold: the process's first sampler, paying one-time costs (torch's first
    # ops, Go's reflection caches). Warm: a second sampler with another seed.
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for seed in (0, 1):
        t0 = time.perf_counter()
        first = first_batch(seed)
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss_mb = (peak - base) / 1024
    print(json.dumps({"cold": times[0], "warm": times[1], "rss_mb": rss_mb, "first": first, "load": load}))


def run_child(kind: str, n: int) -> dict | None:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", kind, str(n)], capture_output=True, text=True, timeout=900
    )
    if proc.returncode != 0:
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def row(n: int, kind: str, r: dict) -> str:
    return f"{n:8.0e}  {kind:26s} {r['cold'] * 1e3:8.2f}ms {r['warm'] * 1e3:8.2f}ms {r['rss_mb']:13.1f}"


def run_rewarm(n: int, repeat: int) -> dict | None:
    """rewarm's figures over `repeat` fresh processes: the median of each,
    plus the slowest cold first batch."""
    runs = [r for r in (run_child("rewarm ReplaySampler", n) for _ in range(repeat)) if r]
    if not runs:
        return None
    med = {k: statistics.median(r[k] for r in runs) for k in ("cold", "warm", "rss_mb", "load")}
    return {**med, "cold_max": max(r["cold"] for r in runs), "runs": len(runs)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", nargs=2)
    ap.add_argument("--sizes", default="1e6,1e7,1e8")
    ap.add_argument("--repeat", type=int, default=7, help="fresh processes per rewarm case")
    args = ap.parse_args()
    if args.child:
        child(args.child[0], int(float(args.child[1])))
        return
    sizes = [int(float(x)) for x in args.sizes.split(",")]
    kinds = ["rewarm ReplaySampler", "torch RandomSampler", "torch DistributedSampler"]
    print(f"first batch of {BATCH} (rank 0 of {WORLD} for the distributed ones), fresh process per case")
    print("cold: the process's first sampler; warm: a second one with another seed (ratios: warm over warm)")
    print(f"rewarm: median of {args.repeat} fresh processes, and the slowest cold first batch of them")
    head = f"{'n':>8s}  {'sampler':26s} {'cold':>10s} {'warm':>10s} {'peak RSS +MB':>13s}"
    print(f"{head} {'torch / rewarm':>15s} {'slowest cold':>13s}")
    ours_all = []
    for n in [*sizes, 10**12]:
        ours = run_rewarm(n, args.repeat)
        res = {kinds[0]: ours}
        if n != 10**12:
            res.update({k: run_child(k, n) for k in kinds[1:]})
        for k, r in res.items():
            if r is None:
                print(f"{n:8.0e}  {k:26s} {'failed':>10s}")
                continue
            if k == kinds[0]:
                ours_all.append(r)
                print(row(n, k, r) + f" {'':>15s} {r['cold_max'] * 1e3:11.2f}ms")
            else:
                ratio = "" if ours is None else f"{r['warm'] / ours['warm']:.0f}x"
                print(row(n, k, r) + f" {ratio:>15s}")
    if ours_all:
        worst = max(r["cold_max"] for r in ours_all)
        load = statistics.median(r["load"] for r in ours_all)
        print(f"rewarm cold first batch, slowest of all n and runs: {worst * 1e3:.2f} ms (target < 1 ms)")
        print(f"loading the in-process extension, before the clock (median): {load * 1e3:.1f} ms")
    print("\nGo, one run: Megatron's greedy blend build for 10^7 samples vs rewarm's first batch over 10^7")
    out = subprocess.run(
        [
            "go",
            "test",
            "-run",
            "^$",
            "-bench",
            "MegatronBlendBuild|FirstBatch|PermPlusQuota|BatchPerIndex",
            "./replay",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    ns = {
        m.group(1): float(m.group(2)) for m in re.finditer(r"Benchmark(\w+)-\d+\s+\d+\s+([\d.]+) ns/op", out)
    }
    print(out.strip())
    if "MegatronBlendBuild" in ns and "FirstBatch" in ns:
        print(
            f"Megatron blend build / rewarm first batch: {ns['MegatronBlendBuild'] / ns['FirstBatch']:.0f}x"
        )


if __name__ == "__main__":
    main()
