"""Loading schedule specs from dicts and files. Validation happens in Go."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rewarm._errors import SpecError

SpecLike = Mapping[str, Any] | str | os.PathLike[str]


def load_spec(spec: SpecLike) -> dict[str, Any]:
    """Return a spec mapping from a dict, or from a .yaml/.yml/.json file."""
    if type(spec) is dict or isinstance(spec, Mapping):
        return dict(spec)
    if not isinstance(spec, (str, os.PathLike)):
        raise TypeError(
            f"schedule must be a mapping or a path to a .yaml/.json file, got {type(spec).__name__}"
        )
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"schedule file not found: {path}")
    text = path.read_text()
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text)
    elif suffix == ".json":
        data = json.loads(text)
    else:
        raise SpecError(f"schedule file {path}: unknown extension {suffix!r} (use .yaml, .yml or .json)")
    if not isinstance(data, Mapping):
        raise SpecError(
            f"schedule file {path}: expected a mapping at the top level, got {type(data).__name__}"
        )
    return dict(data)


def refined_spec(
    grad_norms: Sequence[float],
    peak_lr: float,
    norm: str = "l2",
    total_steps: int | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A ``refined`` schedule spec (Defazio et al. 2023) from observed gradient
    norms, for example ``wrapped.grad_norms`` of an earlier run. Use norm
    "l2" for SGD-like and "l1" for Adam-like optimizers, matching how the
    norms were measured."""
    spec: dict[str, Any] = {
        "kind": "refined",
        "peak_lr": peak_lr,
        "norm": norm,
        "grad_norms": [float(g) for g in grad_norms],
    }
    if total_steps is not None:
        spec["total_steps"] = total_steps
    spec.update(fields)
    return spec
