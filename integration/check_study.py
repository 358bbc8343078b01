"""Checks a study results folder (`rewarm demo --out DIR`): every policy, with
and without replay, has finite validation losses on A and B after both
stages; the validation curves cover every run; the MoD comparison has both runs;
every plot is a PNG; the summary
table lists every row. Exits non-zero naming what is missing.

    python integration/check_study.py DIR
"""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

POLICIES = {"repeated cosine", "infinite", "linear", "refined"}
PLOTS = ("lr", "mixture", "retention", "loss", "forgetting")
PNG = b"\x89PNG\r\n\x1a\n"


def problems(out: Path) -> list[str]:
    bad: list[str] = []
    try:
        rows = list(csv.DictReader((out / "results.csv").open()))
    except OSError as e:
        return [f"results.csv: {e}"]
    want = {(p, r, s) for p in POLICIES for r in ("0", "1") for s in ("1", "2")}
    got = {(row["policy"], row["replay"], row["stage"]) for row in rows}
    bad += [f"results.csv: no row for policy={p!r} replay={r} stage={s}" for p, r, s in sorted(want - got)]
    bad += [f"results.csv: unexpected row {k}" for k in sorted(got - want)]
    if len(rows) != len(got):
        bad.append(f"results.csv: {len(rows)} rows for {len(got)} distinct (policy, replay, stage)")
    for row in rows:
        for col in ("val_loss_A", "val_loss_B", "wall_s"):
            v = float(row[col])
            if not math.isfinite(v) or v < 0:
                bad.append(f"results.csv: {col}={row[col]} for {row['policy']} replay={row['replay']}")
    try:
        mod = list(csv.DictReader((out / "mod.csv").open()))
    except OSError as e:
        return [*bad, f"mod.csv: {e}"]
    if sorted(r["mod"] for r in mod) != ["0", "1"]:
        bad.append(f"mod.csv: want one run with MoD off and one on, got {[r['mod'] for r in mod]}")
    for r in mod:
        for col in ("val_loss_A", "val_loss_B", "final_train_loss", "wall_s"):
            if not math.isfinite(float(r[col])):
                bad.append(f"mod.csv: {col}={r[col]} with mod={r['mod']}")
    try:
        curves = list(csv.DictReader((out / "curves.csv").open()))
    except OSError as e:
        return [*bad, f"curves.csv: {e}"]
    for p, r in sorted({(p, r) for p, r, _ in want}):
        points = [c for c in curves if (c["policy"], c["replay"]) == (p, r)]
        if len(points) < 2:
            bad.append(f"curves.csv: {len(points)} points for policy={p!r} replay={r}")
        bad += [
            f"curves.csv: val_loss_A={c['val_loss_A']} at step {c['step']} for {p} replay={r}"
            for c in points
            if not math.isfinite(float(c["val_loss_A"])) or not math.isfinite(float(c["val_loss_B"]))
        ]
    for name in PLOTS:
        p = out / f"{name}.png"
        if not p.exists() or p.read_bytes()[:8] != PNG:
            bad.append(f"{name}.png: missing or not a PNG")
    summary = (out / "summary.md").read_text() if (out / "summary.md").exists() else ""
    table_rows = [line for line in summary.splitlines() if line.startswith("| ") and "---" not in line]
    if len(table_rows) != 2 * len(POLICIES) + 1 + 2 + 1:  # policies, header; MoD rows, header
        bad.append(f"summary.md: {len(table_rows)} table rows")
    return bad


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    bad = problems(Path(sys.argv[1]))
    for b in bad:
        print(f"check_study: {b}", file=sys.stderr)
    if not bad:
        print(f"check_study: {sys.argv[1]} is complete, every loss finite")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
