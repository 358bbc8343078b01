"""The continual pre-training study: `rewarm demo` (or
examples/continual_pretraining.py under `rewarm launch -- torchrun ...`).

A small GPT-style decoder (rewarm.mod.TinyLlama) trains on CPU on corpus A,
then on corpus B, under four LR policies, each with and without 5% replay of
the A samples stage 1 actually read (`replay: seen`):

- repeated cosine: re-warm and re-decay in every stage (Gupta et al. 2023);
- infinite: warm up and cool down once, hold a constant LR across stages,
  anneal at the end of each (Ibrahim et al. 2024; Singh et al. 2025);
- linear: re-warm, then linear decay to the floor in every stage;
- refined: each stage's schedule refined from the linear run's gradient
  norms for that stage (Defazio et al. 2023).

A and B are generated deterministically: two second-order languages over
overlapping vocabularies with different transition structure, so training on
B measurably erases A; their entropy rates (the true model's loss) are
reported as the floor. One more run, with Mixture-of-Depths
off and on (the p-MoD plan over a routable span of each sequence), reports
loss and wall time. Everything lands in a results folder: a CSV of the
validation losses on A and B after each stage for every policy, PNG plots of
the LR, the replay mixture, the per-layer retention and the loss curves, and
a summary table (also printed).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

import rewarm
import rewarm.mod as M


@dataclass(frozen=True)
class Config:
    steps: int = 400  # per stage
    batch: int = 32
    seq: int = 64
    vocab: int = 96
    d: int = 64
    layers: int = 4
    heads: int = 4
    peak_lr: float = 3e-3
    train_seqs: int = 20_000  # per corpus
    val_seqs: int = 256
    mod_span: int = 48  # routable tokens per sequence in the MoD run
    seed: int = 0
    log_every: int = 50
    backend: str = "auto"  # how the runs reach the Go core


QUICK = Config(steps=120, batch=16, d=48, train_seqs=4_000, val_seqs=128, log_every=40)


def rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def log(msg: str) -> None:
    if rank_world()[0] == 0:
        print(msg, flush=True)


# --- the corpora -------------------------------------------------------------


def language(seed: int, vocab: int, lo: int, hi: int, sharpness: float = 2.0) -> torch.Tensor:
    """A second-order language over tokens [lo, hi): the successor of (a, b)
    has logits sharpness·(P[a] + Q[b]), with random P and Q. Structured enough
    for a small model to learn within a few hundred steps (about 2 nats below
    the unigram loss at sharpness 2), and it needs both previous tokens.
    Returns the transition table [vocab, vocab, vocab]."""
    g = torch.Generator().manual_seed(seed)
    p = torch.randn(vocab, hi - lo, generator=g)
    q = torch.randn(vocab, hi - lo, generator=g)
    logits = torch.full((vocab, vocab, vocab), -math.inf)
    logits[:, :, lo:hi] = sharpness * (p[:, None, :] + q[None, :, :])
    return torch.softmax(logits, dim=-1)


def entropy_rate(table: torch.Tensor, seqs: torch.Tensor) -> float:
    """The loss of the true model on seqs: the floor any model can reach."""
    probs = table[seqs[:, :-2], seqs[:, 1:-1], seqs[:, 2:]]
    return -probs.log().mean().item()


def sample(table: torch.Tensor, n: int, length: int, lo: int, hi: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    out = torch.empty(n, length, dtype=torch.long)
    out[:, :2] = torch.randint(lo, hi, (n, 2), generator=g)
    for t in range(2, length):
        probs = table[out[:, t - 2], out[:, t - 1]]
        out[:, t] = torch.multinomial(probs, 1, generator=g).squeeze(1)
    return out


def corpora(cfg: Config) -> dict[str, torch.Tensor]:
    """A uses tokens [0, 64), B tokens [32, 96): half the vocabulary is
    shared, with different statistics, so learning B overwrites A."""
    la = language(1, cfg.vocab, 0, 64)
    lb = language(2, cfg.vocab, 32, 96)
    n = cfg.train_seqs + cfg.val_seqs
    a = sample(la, n, cfg.seq + 1, 0, 64, seed=10)
    b = sample(lb, n, cfg.seq + 1, 32, 96, seed=20)
    return {
        "A": a[: cfg.train_seqs],
        "A_val": a[cfg.train_seqs :],
        "B": b[: cfg.train_seqs],
        "B_val": b[cfg.train_seqs :],
        "floor_A": torch.tensor(entropy_rate(la, a[cfg.train_seqs :])),
        "floor_B": torch.tensor(entropy_rate(lb, b[cfg.train_seqs :])),
    }


# --- policies ------------------------------------------------------------------


def policies(cfg: Config, norms: dict[int, list[float]] | None = None) -> dict[str, dict[str, Any]]:
    s, p = cfg.steps, cfg.peak_lr
    w = max(1, s // 20)
    floor = p / 10
    out: dict[str, dict[str, Any]] = {
        "repeated cosine": {
            "kind": "stages",
            "defaults": {"kind": "cosine", "peak_lr": p, "min_lr": floor, "warmup_steps": w},
            "stages": [{"name": "A", "steps": s}, {"name": "B", "steps": s}],
        },
        "infinite": {
            "kind": "stages",
            "defaults": {
                "kind": "infinite",
                "peak_lr": p,
                "const_lr": p / 4,
                "min_lr": floor,
                "anneal_steps": s // 5,
                "anneal_shape": "exp",
            },
            "stages": [
                {
                    "name": "A",
                    "steps": s,
                    "schedule": {
                        "warmup_steps": w,
                        "cooldown_steps": s // 4,
                        "constant_steps": s - w - s // 4 - s // 5,
                    },
                },
                {"name": "B", "steps": s, "schedule": {"constant_steps": s - s // 5}},
            ],
        },
        "linear": {
            "kind": "stages",
            "defaults": {"kind": "linear", "peak_lr": p, "min_lr": floor, "warmup_steps": w},
            "stages": [{"name": "A", "steps": s}, {"name": "B", "steps": s}],
        },
    }
    if norms is not None:
        out["refined"] = {
            "kind": "stages",
            "stages": [
                {
                    "name": n,
                    "steps": s,
                    "schedule": rewarm.refined_spec(norms[k], peak_lr=p, norm="l1", total_steps=s),
                }
                for k, n in enumerate(("A", "B"))
            ],
        }
    return out


def replay_spec(cfg: Config, replay: bool, steps: int) -> dict[str, Any]:
    stage2 = {"B": 0.95, "A": 0.05} if replay else {"B": 1.0}
    return {
        "sources": [{"name": "A", "size": cfg.train_seqs}, {"name": "B", "size": cfg.train_seqs}],
        "global_batch_size": cfg.batch,
        "seed": cfg.seed,
        "replay": "seen",
        "stages": [
            {"name": "A", "steps": steps, "mixture": {"A": 1.0}},
            {"name": "B", "steps": steps, "mixture": stage2},
        ],
    }


# --- training ------------------------------------------------------------------


def build_model(cfg: Config) -> M.TinyLlama:
    torch.manual_seed(cfg.seed)  # every run starts from the same weights
    return M.TinyLlama(
        M.LlamaConfig(
            vocab_size=cfg.vocab,
            hidden_size=cfg.d,
            num_layers=cfg.layers,
            num_heads=cfg.heads,
            ffn_size=int(cfg.d * 8 / 3),
        )
    )


def evaluate(model: nn.Module, seqs: torch.Tensor, route: torch.Tensor | None) -> float:
    model.eval()
    with torch.no_grad():
        total = 0.0
        for i in range(0, len(seqs), 64):
            x = seqs[i : i + 64]
            r = None if route is None else route[: len(x)]
            logits = model(x[:, :-1], route_mask=r)
            total += nn.functional.cross_entropy(
                logits.flatten(0, 1), x[:, 1:].flatten(), reduction="sum"
            ).item()
    model.train()
    return total / (len(seqs) * (seqs.shape[1] - 1))


def train(
    cfg: Config,
    data: dict[str, torch.Tensor],
    name: str,
    schedule: dict[str, Any],
    replay: bool,
    track_norms: bool = False,
    mod: bool = False,
) -> dict[str, Any]:
    rank, world = rank_world()
    model = build_model(cfg)
    route = None
    if mod:
        plan = M.plan(
            num_layers=cfg.layers,
            tokens=cfg.mod_span,
            text_tokens=cfg.seq - cfg.mod_span,
            hidden_size=cfg.d,
            ffn_size=int(cfg.d * 8 / 3),
        )
        M.apply(model, plan)
        route = torch.zeros(max(cfg.batch // world, 64), cfg.seq, dtype=torch.bool)
        route[:, 8 : 8 + cfg.mod_span] = True
    ddp: nn.Module = model
    if world > 1:
        ddp = nn.parallel.DistributedDataParallel(model)
    opt = rewarm.wrap(
        torch.optim.AdamW(ddp.parameters(), weight_decay=0.01),
        schedule=schedule,
        backend=cfg.backend,  # type: ignore[arg-type]
        track_grad_norm="l1" if track_norms else None,
        name=name,
    )
    sampler = rewarm.ReplaySampler(
        replay_spec(cfg, replay, cfg.steps),
        rank=rank,
        world_size=world,
        backend=cfg.backend,  # type: ignore[arg-type]
    )
    seqs = torch.cat([data["A"], data["B"]])
    out: dict[str, Any] = {
        "policy": name,
        "replay": replay,
        "mod": mod,
        "loss": [],
        "lr": [],
        "stages": [],
        "curve": [],
    }
    every = max(1, cfg.steps // 5)
    t0 = time.perf_counter()
    eval_s = 0.0  # kept out of the training time
    for step in range(2 * cfg.steps):
        x = seqs[sampler.batch(step)]
        r = None if route is None else route[: len(x)]
        logits = ddp(x[:, :-1], route_mask=r)
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad()
        out["loss"].append(loss.item())
        out["lr"].append(opt.get_last_lr()[0])  # the rate this update used
        if (step + 1) % every == 0 or (step + 1) % cfg.steps == 0:
            e0 = time.perf_counter()
            val_a = evaluate(model, data["A_val"], route)
            val_b = evaluate(model, data["B_val"], route)
            eval_s += time.perf_counter() - e0
            out["curve"].append((step + 1, val_a, val_b))
            if (step + 1) % cfg.steps == 0:
                out["stages"].append(
                    {
                        "stage": (step + 1) // cfg.steps,
                        "val_A": val_a,
                        "val_B": val_b,
                        "wall_s": time.perf_counter() - t0 - eval_s,
                    }
                )
        if (step + 1) % cfg.log_every == 0:
            tag = name + (" +replay" if replay else "") + (" MoD" if mod else "")
            recent = sum(out["loss"][-cfg.log_every :]) / cfg.log_every
            log(f"  [{tag}] step {step + 1}/{2 * cfg.steps} lr {out['lr'][-1]:.2e} loss {recent:.4f}")
    out["wall_s"] = time.perf_counter() - t0 - eval_s
    if track_norms:
        out["grad_norms"] = {0: opt.grad_norms[: cfg.steps], 1: opt.grad_norms[cfg.steps :]}
    return out


# --- outputs -------------------------------------------------------------------


def chart(out: Path, name: str, spec: dict[str, Any]) -> None:
    data = out / f"{name}.json"
    data.write_text(json.dumps(spec))
    subprocess.run([rewarm.find_binary(), "chart", str(data), "-o", str(out / f"{name}.png")], check=True)


def smooth(xs: list[float], k: int) -> list[float]:
    out, acc = [], 0.0
    for i, x in enumerate(xs):
        acc += x
        if i >= k:
            acc -= xs[i - k]
        out.append(acc / min(i + 1, k))
    return out


def write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def write_outputs(
    cfg: Config,
    runs: list[dict[str, Any]],
    mod_runs: list[dict[str, Any]],
    floors: tuple[float, float],
    out: Path,
) -> str:
    out.mkdir(parents=True, exist_ok=True)
    write_csv(
        out / "results.csv",
        ["policy", "replay", "stage", "val_loss_A", "val_loss_B", "wall_s"],
        [
            [r["policy"], int(r["replay"]), st["stage"], f"{st['val_A']:.5f}", f"{st['val_B']:.5f}", wall]
            for r in runs
            for st in r["stages"]
            for wall in [f"{st['wall_s']:.2f}"]
        ],
    )
    write_csv(
        out / "mod.csv",
        ["mod", "val_loss_A", "val_loss_B", "final_train_loss", "wall_s"],
        [
            [
                int(r["mod"]),
                f"{r['stages'][-1]['val_A']:.5f}",
                f"{r['stages'][-1]['val_B']:.5f}",
                f"{sum(r['loss'][-20:]) / len(r['loss'][-20:]):.5f}",
                f"{r['wall_s']:.2f}",
            ]
            for r in mod_runs
        ],
    )
    write_csv(
        out / "curves.csv",
        ["policy", "replay", "step", "val_loss_A", "val_loss_B"],
        [[r["policy"], int(r["replay"]), n, f"{a:.5f}", f"{b:.5f}"] for r in runs for n, a, b in r["curve"]],
    )
    steps = list(range(2 * cfg.steps))
    seen = set()
    lr_series = []
    for r in runs:
        if r["policy"] not in seen:
            seen.add(r["policy"])
            lr_series.append({"name": r["policy"], "x": steps, "y": r["lr"]})
    chart(
        out,
        "lr",
        {
            "title": "learning rate per policy (stage 1: A, stage 2: B)",
            "xlabel": "step",
            "ylabel": "learning rate",
            "series": lr_series,
        },
    )
    sampler = rewarm.ReplaySampler(replay_spec(cfg, True, cfg.steps), rank=0, world_size=1)
    frac = [sampler.quotas(s)["A"] / cfg.batch for s in steps]
    chart(
        out,
        "mixture",
        {
            "title": "share of corpus A in each global batch (replay run)",
            "xlabel": "step",
            "ylabel": "fraction of the batch",
            "series": [{"name": "A (5% replay in stage 2)", "x": steps, "y": frac}],
        },
    )
    ours = M.plan(num_layers=cfg.layers, tokens=cfg.mod_span, text_tokens=cfg.seq - cfg.mod_span)
    llava = M.plan(num_layers=32, tokens=576, text_tokens=55)
    chart(
        out,
        "retention",
        {
            "title": "p-MoD plan: share of routable tokens each layer keeps",
            "xlabel": "layer / number of layers",
            "ylabel": "k / N",
            "series": [
                {  # one flat step per layer
                    "name": f"{name}: {len(p.layers)} layers, N={n}",
                    "x": [(lp.index + e) / len(p.layers) for lp in p.layers for e in (0, 1)],
                    "y": [lp.k / n for lp in p.layers for _ in (0, 1)],
                }
                for name, p, n in (("this study", ours, cfg.mod_span), ("LLaVA-1.5 7B", llava, 576))
            ],
        },
    )
    k = max(1, cfg.steps // 20)
    chart(
        out,
        "loss",
        {
            "title": "training loss (moving average)",
            "xlabel": "step",
            "ylabel": "loss",
            "series": [
                {
                    "name": r["policy"] + (" +replay" if r["replay"] else ""),
                    "x": steps,
                    "y": smooth(r["loss"], k),
                }
                for r in runs
            ],
        },
    )
    chart(
        out,
        "forgetting",
        {
            "title": "validation loss on A (stage 1 trains on A, stage 2 on B)",
            "xlabel": "step",
            "ylabel": "loss on A",
            "legend": "top left",
            "series": [
                {
                    "name": r["policy"] + (" +replay" if r["replay"] else ""),
                    "x": [c[0] for c in r["curve"]],
                    "y": [c[1] for c in r["curve"]],
                }
                for r in runs
            ],
        },
    )
    rows = []
    for r in runs:
        s1, s2 = r["stages"]
        rows.append(
            (
                r["policy"],
                "5%" if r["replay"] else "0%",
                s1["val_A"],
                s2["val_A"],
                s2["val_A"] - s1["val_A"],
                s2["val_B"],
            )
        )
    header = ["policy", "replay", "A loss after stage 1", "A loss after stage 2", "forgetting (A)"]
    lines = ["| " + " | ".join([*header, "B loss after stage 2"]) + " |", "|---|---|---|---|---|---|"]
    lines += [
        f"| {p} | {rp} | {a1:.4f} | {a2:.4f} | {fg:+.4f} | {b2:.4f} |" for p, rp, a1, a2, fg, b2 in rows
    ]
    off, on = mod_runs
    lines += ["", "| MoD | A loss | B loss | wall time |", "|---|---|---|---|"]
    for r in (off, on):
        last = r["stages"][-1]
        mode = "on" if r["mod"] else "off"
        lines.append(f"| {mode} | {last['val_A']:.4f} | {last['val_B']:.4f} | {r['wall_s']:.1f} s |")
    lines += ["", f"Entropy floor (the true model's loss): A {floors[0]:.4f}, B {floors[1]:.4f}."]
    table = "\n".join(lines)
    (out / "summary.md").write_text(table + "\n")
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    return table


def _stage_steps(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected an integer") from None
    if n < 2:  # a refined schedule needs two steps
        raise argparse.ArgumentTypeError(f"{n}: must be >= 2")
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="rewarm demo", description="The continual pre-training study on CPU.")
    ap.add_argument("--quick", action="store_true", help="a smaller study (at most 3 minutes on 2 cores)")
    ap.add_argument("--out", default="results", help="results folder (default: results)")
    ap.add_argument("--steps", type=_stage_steps, help="steps per stage, >= 2 (overrides the preset)")
    ap.add_argument(
        "--backend",
        default="auto",
        choices=["auto", "inprocess", "socket"],
        help="how to reach the Go core (auto: the sidecar in REWARM_SOCKET, else in-process)",
    )
    args = ap.parse_args(argv)
    # Refused now, not after minutes of training.
    if Path(args.out).exists() and not Path(args.out).is_dir():
        ap.error(f"--out {args.out}: exists and is not a folder")
    if args.backend == "socket" and not os.environ.get("REWARM_SOCKET"):
        ap.error("--backend socket needs a sidecar: set REWARM_SOCKET, or run under `rewarm launch`")
    cfg = QUICK if args.quick else Config()
    cfg = replace(cfg, backend=args.backend)
    if args.steps is not None:
        cfg = replace(cfg, steps=args.steps)
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
        dist.init_process_group("gloo")
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // rank_world()[1]))
    start = time.perf_counter()
    log(
        f"rewarm study: {cfg.steps} steps per stage, batch {cfg.batch}, d={cfg.d}, {cfg.layers} layers, "
        f"world size {rank_world()[1]}"
    )
    data = corpora(cfg)
    runs = []
    norms: dict[int, list[float]] = {}
    for replay in (False, True):
        for name, spec in policies(cfg).items():
            log(f"policy {name}, replay {'5%' if replay else 'off'}")
            r = train(cfg, data, name, spec, replay, track_norms=name == "linear")
            if name == "linear" and not replay:
                norms = r.pop("grad_norms")
            r.pop("grad_norms", None)
            runs.append(r)
        log(f"policy refined, replay {'5%' if replay else 'off'}")
        runs.append(train(cfg, data, "refined", policies(cfg, norms)["refined"], replay))
    mod_runs = [
        train(cfg, data, "repeated cosine", policies(cfg)["repeated cosine"], True, mod=m)
        for m in (False, True)
    ]
    if rank_world()[0] == 0:
        out = Path(args.out)
        floors = (data["floor_A"].item(), data["floor_B"].item())
        table = write_outputs(cfg, runs, mod_runs, floors, out)
        print("\n" + table)
        print(f"\nresults in {out.resolve()} ({time.perf_counter() - start:.0f} s)")
        bad = [
            r["policy"]
            for r in runs + mod_runs
            for s in r["stages"]
            for v in (s["val_A"], s["val_B"])
            if not math.isfinite(v)
        ]
        if bad:
            print(f"rewarm study: non-finite losses in {sorted(set(bad))}", file=sys.stderr)
            return 1
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
