"""CPU wall time of a stack of Llama-style decoder blocks under the p-MoD plan
against dense, side by side in one run: 640 tokens, of which 576 are
routable (an image) and 64 are text.

Per routed layer the time ratio is compared with R + 0.05 (the issue's
target) and with the layer's FLOPs ratio + 0.05. The FLOPs ratio
F(T+k)/F(T+N) comes from the Go planner (a one-layer plan with the same
ratio); the 64 text tokens always go through the layer, so where it exceeds
R + 0.05 no implementation can meet that target. The stack's time ratio is
compared with the plan's FLOPs ratio.

On a GPU: `--device cuda --dtype bfloat16 --compile off,on` runs the same
tables with bf16 weights, with and without torch.compile (each layer compiled
on its own; CUDA is synchronised around every timed call).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import rewarm.mod as M

TEXT, ROUTABLE = 64, 576


def _no_sync() -> None:
    pass


def paired(fa, fb, reps: int, sync=_no_sync) -> tuple[float, float, float]:
    """Times fa and fb alternately, so drift in a shared machine hits both;
    returns the median of each and the median of the per-pair ratios fa/fb.
    sync waits for the device (CUDA runs asynchronously)."""
    for _ in range(3):  # warm up (allocator, caches, compilation): one call left the first layer ~0.05 high
        fa(), fb()
    sync()
    ta, tb = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        fa()
        sync()
        t1 = time.perf_counter()
        fb()
        sync()
        ta.append(t1 - t0)
        tb.append(time.perf_counter() - t1)
    ratio = statistics.median(a / b for a, b in zip(ta, tb, strict=True))
    return statistics.median(ta), statistics.median(tb), ratio


def run(
    d: int,
    layers: int,
    reps: int,
    stack_reps: int,
    device: torch.device,
    dtype: torch.dtype,
    compiled: bool,
) -> None:
    ffn = int(8 * d / 3 / 64 + 1) * 64
    cfg = M.LlamaConfig(vocab_size=256, hidden_size=d, num_layers=layers, num_heads=d // 64, ffn_size=ffn)
    plan = M.plan(num_layers=layers, tokens=ROUTABLE, text_tokens=TEXT, hidden_size=d, ffn_size=ffn)
    torch.manual_seed(0)
    dense = M.TinyLlama(cfg).eval()
    mod = M.TinyLlama(cfg).eval()
    mod.load_state_dict(dense.state_dict())
    M.apply(mod, plan)
    for layer in mod.layers:
        if isinstance(layer, M.MoDLayer):
            torch.nn.init.normal_(layer.router.weight, std=0.02)
    dense.to(device=device, dtype=dtype)
    mod.to(device=device, dtype=dtype)
    x = torch.randn(1, TEXT + ROUTABLE, d, device=device, dtype=dtype)
    pos = torch.arange(TEXT + ROUTABLE, device=device).unsqueeze(0)
    mask = torch.zeros(1, TEXT + ROUTABLE, dtype=torch.bool, device=device)
    mask[:, 32 : 32 + ROUTABLE] = True
    # Each layer compiled on its own: the dense blocks share one graph, each
    # distinct k of the MoD layers gets its own.
    wrap = torch.compile if compiled else (lambda m: m)
    mod_layers = [wrap(layer) for layer in mod.layers]
    dense_layers = [wrap(layer) for layer in dense.layers]
    sync = torch.cuda.synchronize if device.type == "cuda" else _no_sync
    on_cpu = device.type == "cpu"
    where = f"{torch.get_num_threads()} threads" if on_cpu else torch.cuda.get_device_name(device)
    print(
        f"\nd={d}, ffn={ffn}, {layers} layers, {TEXT}+{ROUTABLE} tokens, torch {torch.__version__}, {where}, "
        f"{str(dtype).removeprefix('torch.')}, torch.compile {'on' if compiled else 'off'}"
    )
    with torch.inference_mode():
        print(
            f"{'layer':>5s} {'R':>6s} {'k':>4s} {'FLOPs ratio':>12s} {'time ratio':>11s} {'<= R+0.05':>10s} "
            f"{'<= FLOPs+0.05':>14s}"
        )
        seen: dict[int, tuple[float, float, float]] = {}
        for lp in plan.layers:
            if not lp.route or lp.k in seen:
                continue
            layer = mod_layers[lp.index]
            _, _, ratio = paired(
                lambda layer=layer: layer(x, pos, route_mask=mask),
                lambda: dense_layers[0](x, pos),
                reps,
                sync,
            )
            one = M.plan(
                num_layers=1,
                tokens=ROUTABLE,
                text_tokens=TEXT,
                hidden_size=d,
                ffn_size=ffn,
                schedule={"kind": "explicit", "ratios": [lp.ratio]},
            )
            assert one.layers[0].k == lp.k, (one.layers[0].k, lp.k)
            fr_layer = one.summary.flops_ratio
            seen[lp.k] = (lp.ratio, fr_layer, ratio)
            ok_r, ok_f = ratio <= lp.ratio + 0.05, ratio <= fr_layer + 0.05
            below = "  (R+0.05 < FLOPs ratio)" if lp.ratio + 0.05 < fr_layer else ""
            print(
                f"{lp.index:5d} {lp.ratio:6.3f} {lp.k:4d} {fr_layer:12.3f} {ratio:11.3f} {ok_r!s:>10s} "
                f"{ok_f!s:>14s}{below}"
            )
        # Layers with the same k are timed once; count them both ways.
        for what, rows in (
            ("distinct k", list(seen.values())),
            ("routed layers", [seen[lp.k] for lp in plan.layers if lp.route]),
        ):
            print(
                f"{what}: {sum(t <= r + 0.05 for r, _, t in rows)}/{len(rows)} within R+0.05, "
                f"{sum(t <= f + 0.05 for _, f, t in rows)}/{len(rows)} within their FLOPs ratio+0.05; "
                f"{sum(r + 0.05 < f for r, f, _ in rows)} have R+0.05 below their FLOPs ratio"
            )

        def stack(blocks, **kw):
            def f():
                h = x
                for layer in blocks:
                    h = layer(h, pos, **kw)
                return h

            return f

        t_mod, t_dense, ratio = paired(
            stack(mod_layers, route_mask=mask), stack(dense_layers), stack_reps, sync
        )
    fr = plan.summary.flops_ratio
    verdict = "within" if abs(ratio - fr) <= 0.05 else "NOT within"
    print(
        f"stack: dense {t_dense * 1e3:.1f} ms, p-MoD {t_mod * 1e3:.1f} ms, time ratio {ratio:.3f}, "
        f"FLOPs ratio {fr:.3f} -> {verdict} 0.05"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dims", default="512,1024")
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--reps", type=int, default=12, help="timed pairs per layer")
    ap.add_argument(
        "--stack-reps",
        type=int,
        default=7,
        help="timed pairs of the whole stack (with 3, one noisy pair moved the median on a 2-core machine)",
    )
    ap.add_argument(
        "--threads",
        default="1,2",
        help="torch CPU threads, comma-separated (a layer with fewer tokens gains less from more threads)",
    )
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--compile", default="off", help="off, on, or off,on for both")
    args = ap.parse_args()
    for flag, v in (("--reps", args.reps), ("--stack-reps", args.stack_reps), ("--layers", args.layers)):
        if v < 1:
            ap.error(f"{flag} {v}: must be at least 1")
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    modes = [m.strip() for m in args.compile.split(",")]
    if any(m not in ("off", "on") for m in modes):
        ap.error(f"--compile {args.compile!r}: use off, on, or off,on")
    if "on" in modes:
        # One graph per distinct k: more than dynamo's default limit of recompiles.
        limit = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"
        setattr(torch._dynamo.config, limit, 4 * args.layers)

    def ints(flag: str, text: str) -> list[int]:
        try:
            out = [int(x) for x in text.split(",")]
        except ValueError:
            ap.error(f"{flag} {text!r}: expected comma-separated integers")
        if any(v < 1 for v in out):
            ap.error(f"{flag} {text!r}: every value must be at least 1")
        return out

    dims = ints("--dims", args.dims)
    if any(d % 64 for d in dims):
        ap.error(f"--dims {args.dims!r}: each must be a multiple of 64 (heads of 64)")
    threads = ints("--threads", args.threads) if device.type == "cpu" else [torch.get_num_threads()]
    for mode in modes:
        for n in threads:
            torch.set_num_threads(n)
            for d in dims:
                run(d, args.layers, args.reps, args.stack_reps, device, dtype, mode == "on")


if __name__ == "__main__":
    main()
