"""Per-step overhead of rewarm's wrapper against torch's own schedulers,
measured side by side in one process.

extra cost = wrapped step() - its inner optimizer's step() alone; torch's
scheduler cost = (optimizer.step() + scheduler.step()) - that optimizer's
step() alone. Variants are interleaved round by round; each extra cost is the
median over rounds of the difference within a round, on the same parameters.
"""

from __future__ import annotations

import argparse
import math
import os
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
SEQ = "torch SequentialLR(LinearLR, CosineAnnealingLR)"
LAMBDA = "torch LambdaLR"
BARE = "bare optimizer step"
# Each variant's own optimizer stepped alone: its extra cost is measured
# against the same parameters, since two optimizer instances differ by more
# than a scheduler costs.
INNER = " (its optimizer alone)"
EXTRA = " extra"


def make_params() -> list[torch.nn.Parameter]:
    ps = [torch.nn.Parameter(torch.zeros(16)) for _ in range(4)]
    for p in ps:
        p.grad = torch.ones(16)
    return ps


def torch_variants() -> dict[str, Callable[[], None]]:
    bare = torch.optim.SGD(make_params(), lr=1e-3)
    seq_opt = torch.optim.SGD(make_params(), lr=1e-3)
    seq = torch.optim.lr_scheduler.SequentialLR(
        seq_opt,
        [
            torch.optim.lr_scheduler.LinearLR(seq_opt, start_factor=1e-3, total_iters=100),
            torch.optim.lr_scheduler.CosineAnnealingLR(seq_opt, T_max=10**7, eta_min=1e-4),
        ],
        milestones=[100],
    )
    lam_opt = torch.optim.SGD(make_params(), lr=1e-3)
    lam = torch.optim.lr_scheduler.LambdaLR(
        lam_opt, lambda n: n / 100 if n < 100 else 0.1 + 0.45 * (1 + math.cos(math.pi * (n - 100) / 1e7))
    )

    def seq_step() -> None:
        seq_opt.step()
        seq.step()

    def lam_step() -> None:
        lam_opt.step()
        lam.step()

    return {
        BARE: bare.step,
        SEQ: seq_step,
        LAMBDA: lam_step,
        SEQ + INNER: seq_opt.step,
        LAMBDA + INNER: lam_opt.step,
    }


INFINITE = {
    "kind": "infinite",
    "peak_lr": 1e-3,
    "const_lr": 3e-4,
    "min_lr": 1e-5,
    "warmup_steps": 100,
    "cooldown_steps": 1000,
    "constant_steps": 10**6,
    "anneal_steps": 10**5,
}
SGDR = {
    "kind": "sgdr",
    "peak_lr": 1e-3,
    "min_lr": 1e-5,
    "cycle_steps": 500,
    "cycle_mul": 2,
    "cycle_decay": 0.9,
}


def rewarm_variants(window: int | None) -> dict[str, Callable[[], None]]:
    out = {}
    for label, spec in (("cosine", SPEC), ("infinite", INFINITE), ("sgdr", SGDR)):
        for backend in ("inprocess", "socket"):
            opt = rewarm.wrap(torch.optim.SGD(make_params(), lr=0.0), spec, backend=backend, window=window)
            out[f"rewarm {label} {backend}"] = opt.step
            out[f"rewarm {label} {backend}" + INNER] = opt.optimizer.step
    return out


def measure(fns: dict[str, Callable[[], None]], steps: int, rounds: int) -> dict[str, float]:
    """Median per-step microseconds of each variant, and under "name extra"
    the median over rounds of its difference from its own optimizer alone
    in the same round."""
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(steps):
                fn()
            samples[name].append((time.perf_counter() - t0) / steps * 1e6)
    med = {k: statistics.median(v) for k, v in samples.items() if not k.endswith(INNER)}
    for k in list(med):
        if k + INNER in samples:
            med[k + EXTRA] = statistics.median(
                a - b for a, b in zip(samples[k], samples[k + INNER], strict=True)
            )
    return med


def report(title: str, med: dict[str, float]) -> None:
    seq, lam = med[SEQ + EXTRA], med[LAMBDA + EXTRA]
    print(f"\n{title}")
    print(f"{'variant':50s} {'step us':>8s} {'extra us':>9s} {'/ SequentialLR':>15s} {'/ LambdaLR':>11s}")
    for name, us in med.items():
        if name.endswith(EXTRA):
            continue
        if name == BARE:
            print(f"{name:50s} {us:8.2f}")
            continue
        extra = med[name + EXTRA]
        print(f"{name:50s} {us:8.2f} {extra:9.2f} {extra / seq:15.2f} {extra / lam:11.2f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread, {args.rounds} rounds; extra = median paired difference")
    with rewarm.Sidecar() as sc:
        os.environ["REWARM_SOCKET"] = sc.path
        fns = {**torch_variants(), **rewarm_variants(None)}
        measure(fns, 200, 2)  # warm up
        med = measure(fns, args.steps, args.rounds)
        # One round trip per step, measured apart so its Go and sidecar
        # activity cannot leak into the main table.
        fns1 = {**torch_variants(), **{k: v for k, v in rewarm_variants(1).items() if "cosine" in k}}
        med1 = measure(fns1, max(1, args.steps // 4), args.rounds)
    report(f"default window ({rewarm._optim.DEFAULT_WINDOW} steps per round trip)", med)
    report("window=1 (one round trip per step, for reference)", med1)
    ref = med[SEQ + EXTRA]
    print("\ntargets: in-process extra <= 0.5x torch's scheduler step; socket extra <= 3x")
    for name in med:
        if not name.startswith("rewarm") or name.endswith(EXTRA):
            continue
        target = 0.5 if name.endswith("inprocess") else 3.0
        ratio = med[name + EXTRA] / ref
        verdict = "met" if ratio <= target else "NOT met"
        print(f"  {name}: {ratio:.2f}x SequentialLR (target {target}x) -> {verdict}")


if __name__ == "__main__":
    main()
