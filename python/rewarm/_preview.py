"""rewarm.preview: evaluate a schedule without training."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rewarm._client import Backend, int_arg, shared_client
from rewarm._spec import SpecLike, load_spec


def preview(schedule: SpecLike, steps: int | Sequence[int], backend: Backend = "auto") -> dict[str, Any]:
    """Values of a schedule: ``steps`` is a count (steps 0..steps-1) or a list of
    steps (updates applied). Returns ``{"step", "lr", "momentum",
    "weight_decay", "phases"}``; momentum and weight_decay are None when not
    scheduled, phases is a list of (name, start step)."""
    client = shared_client(backend)
    try:
        if isinstance(steps, int):
            p = client.preview(load_spec(schedule), start=0, count=steps)
        else:
            p = client.preview(load_spec(schedule), [int_arg(s, f"steps[{i}]") for i, s in enumerate(steps)])
    finally:
        client.close()
    return {
        "step": p.steps,
        "lr": p.lr,
        "momentum": p.momentum or None,
        "weight_decay": p.weight_decay or None,
        "phases": p.phases,
    }
