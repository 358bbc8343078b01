"""Reference formulas written out independently of rewarm, for golden values."""

from __future__ import annotations

import math


def cosine_ref(
    n: int, peak: float, total: int, warmup: int = 0, min_lr: float = 0.0, start: float = 0.0
) -> float:
    """The issue's closed form, written out independently of rewarm."""
    if n < warmup:
        return start + (peak - start) * n / warmup
    if n > total:
        return min_lr
    if total == warmup:
        return peak
    return min_lr + (peak - min_lr) * 0.5 * (1 + math.cos(math.pi * (n - warmup) / (total - warmup)))
