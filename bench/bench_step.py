"""Per-step overhead of rewarm's wrapper against torch's own schedulers,
measured side by side in one process.

extra cost = wrapped step() - bare optimizer step(); torch's scheduler cost =
(optimizer.step() + scheduler.step()) - bare optimizer step(). Rounds are
interleaved and the median per-step time of each variant is reported.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
import warnings
from collections.abc import Callable

import torch

import rewarm

SPEC = {
    "kind": "cosine",
    "peak_lr": 1e-3,
    "min_lr": 1e-4,
    "warmup_steps": 100,
    "warmup_start_lr": 0.0,
    "total_steps": 10**7,
}


def make_params() -> list[torch.nn.Parameter]:
    ps = [torch.nn.Parameter(torch.zeros(16)) for _ in range(4)]
    for p in ps:
        p.grad = torch.ones(16)
    return ps


def variants(sidecar_path: str) -> dict[str, Callable[[], None]]:
    out: dict[str, Callable[[], None]] = {}
    bare = torch.optim.SGD(make_params(), lr=1e-3)
    out["bare optimizer step"] = bare.step

    seq_opt = torch.optim.SGD(make_params(), lr=1e-3)
    seq = torch.optim.lr_scheduler.SequentialLR(
        seq_opt,
        [
            torch.optim.lr_scheduler.LinearLR(seq_opt, start_factor=1e-3, total_iters=100),
            torch.optim.lr_scheduler.CosineAnnealingLR(seq_opt, T_max=10**7, eta_min=1e-4),
        ],
        milestones=[100],
    )

    def seq_step() -> None:
        seq_opt.step()
        seq.step()

    out["torch SequentialLR(LinearLR, CosineAnnealingLR)"] = seq_step

    lam_opt = torch.optim.SGD(make_params(), lr=1e-3)
    lam = torch.optim.lr_scheduler.LambdaLR(
        lam_opt, lambda n: n / 100 if n < 100 else 0.1 + 0.45 * (1 + math.cos(math.pi * (n - 100) / 1e7))
    )

    def lam_step() -> None:
        lam_opt.step()
        lam.step()

    out["torch LambdaLR"] = lam_step
    out["rewarm in-process"] = rewarm.wrap(
        torch.optim.SGD(make_params(), lr=0.0), SPEC, backend="inprocess"
    ).step
    out["rewarm in-process, window=1"] = rewarm.wrap(
        torch.optim.SGD(make_params(), lr=0.0), SPEC, backend="inprocess", window=1
    ).step
    sock_opt = torch.optim.SGD(make_params(), lr=0.0)
    sock = rewarm.RewarmOptimizer(sock_opt, SPEC, backend="socket")
    out["rewarm socket"] = sock.step
    out["rewarm socket, window=1"] = rewarm.RewarmOptimizer(
        torch.optim.SGD(make_params(), lr=0.0), SPEC, backend="socket", window=1
    ).step
    return out


def measure(fns: dict[str, Callable[[], None]], steps: int, rounds: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(steps):
                fn()
            samples[name].append((time.perf_counter() - t0) / steps * 1e6)
    return {k: statistics.median(v) for k, v in samples.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    with rewarm.Sidecar() as sc:
        import os

        os.environ["REWARM_SOCKET"] = sc.path
        fns = variants(sc.path)
        measure(fns, 200, 2)  # warm up
        med = measure(fns, args.steps, args.rounds)
    bare = med["bare optimizer step"]
    torch_cost = {k: med[k] - bare for k in med if k.startswith("torch")}
    ref_name = "torch SequentialLR(LinearLR, CosineAnnealingLR)"
    print(
        f"\nper-step cost, median of {args.rounds} interleaved rounds x {args.steps} steps "
        f"(torch {torch.__version__}, 1 thread)\n"
    )
    print(f"{'variant':52s} {'step us':>9s} {'extra us':>9s} {'/ SequentialLR':>15s} {'/ LambdaLR':>11s}")
    for name, us in med.items():
        extra = us - bare
        if name == "bare optimizer step":
            print(f"{name:52s} {us:9.2f} {'':>9s}")
            continue
        print(
            f"{name:52s} {us:9.2f} {extra:9.2f} {extra / torch_cost[ref_name]:15.2f} "
            f"{extra / torch_cost['torch LambdaLR']:11.2f}"
        )
    print("\ntargets: in-process extra <= 0.5x torch scheduler step; socket extra <= 3x")
    for name, target in (("rewarm in-process", 0.5), ("rewarm socket", 3.0)):
        ratio = (med[name] - bare) / torch_cost[ref_name]
        print(f"  {name}: {ratio:.2f}x SequentialLR -> {'met' if ratio <= target else 'NOT met'}")


if __name__ == "__main__":
    main()
