"""CPU wall time of a stack of Llama-style decoder blocks under the p-MoD plan
against dense, side by side in one run: 640 tokens, of which 576 are
routable (an image) and 64 are text.

Per routed layer the time ratio is compared with R (the plan's ratio) and
with (T+k)/(T+N), the fraction of tokens the layer actually processes; the
stack's time ratio with the plan's FLOPs ratio for these dimensions.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import rewarm.mod as M

TEXT, ROUTABLE = 64, 576


def paired(fa, fb, reps: int) -> tuple[float, float, float]:
    """Times fa and fb alternately, so drift in a shared machine hits both;
    returns the median of each and the median of the per-pair ratios fa/fb."""
    fa(), fb()  # warm up
    ta, tb = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        fa()
        t1 = time.perf_counter()
        fb()
        ta.append(t1 - t0)
        tb.append(time.perf_counter() - t1)
    ratio = statistics.median(a / b for a, b in zip(ta, tb, strict=True))
    return statistics.median(ta), statistics.median(tb), ratio


def run(d: int, layers: int, reps: int) -> None:
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
            torch.nn.init.normal_(layer.router.proj.weight, std=0.02)
    x = torch.randn(1, TEXT + ROUTABLE, d)
    pos = torch.arange(TEXT + ROUTABLE).unsqueeze(0)
    mask = torch.zeros(1, TEXT + ROUTABLE, dtype=torch.bool)
    mask[:, 32 : 32 + ROUTABLE] = True
    print(
        f"\nd={d}, ffn={ffn}, {layers} layers, {TEXT}+{ROUTABLE} tokens, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    with torch.inference_mode():
        print(
            f"{'layer':>5s} {'R':>6s} {'(T+k)/(T+N)':>12s} {'time ratio':>11s} {'<= R+0.05':>10s} "
            f"{'<= (T+k)/(T+N)+0.05':>21s}"
        )
        seen = {}
        for lp in plan.layers:
            if not lp.route or lp.k in seen:
                continue
            layer = mod.layers[lp.index]
            _, _, ratio = paired(
                lambda layer=layer: layer(x, pos, route_mask=mask), lambda: dense.layers[0](x, pos), reps
            )
            eff = (TEXT + lp.k) / (TEXT + ROUTABLE)
            seen[lp.k] = ratio
            ok_r, ok_eff = ratio <= lp.ratio + 0.05, ratio <= eff + 0.05
            print(f"{lp.index:5d} {lp.ratio:6.3f} {eff:12.3f} {ratio:11.3f} {ok_r!s:>10s} {ok_eff!s:>21s}")

        def stack(model, **kw):
            def f():
                h = x
                for layer in model.layers:
                    h = layer(h, pos, **kw)
                return h

            return f

        t_mod, t_dense, ratio = paired(stack(mod, route_mask=mask), stack(dense), max(3, reps // 4))
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
    ap.add_argument("--reps", type=int, default=12)
    args = ap.parse_args()
    for d in (int(x) for x in args.dims.split(",")):
        run(d, args.layers, args.reps)


if __name__ == "__main__":
    main()
