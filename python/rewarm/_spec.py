"""Loading schedule specs from dicts and files. Validation happens in Go."""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from rewarm._errors import SpecError

SpecLike = Mapping[str, Any] | str | os.PathLike[str]


def load_spec(spec: SpecLike, what: str = "schedule") -> dict[str, Any]:
    """Return a spec mapping from a dict, or from a .yaml/.yml/.json file.
    ``what`` names the spec in errors ("schedule", "replay spec")."""
    if type(spec) is dict or isinstance(spec, Mapping):
        # A deep copy: what the caller edits later must not show in the
        # object's .spec while its plan stays the one built from the original.
        return copy.deepcopy(dict(spec))
    if not isinstance(spec, (str, os.PathLike)):
        raise TypeError(
            f"{what} must be a mapping or a path to a .yaml/.json file, got {type(spec).__name__}"
        )
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"{what} file not found: {path}")
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".json"):
        raise SpecError(f"{what} file {path}: unknown extension {suffix!r} (use .yaml, .yml or .json)")
    try:
        with path.open() as f:
            data = _load_yaml(f) if suffix != ".json" else json.load(f, object_pairs_hook=_no_duplicates)
    except SpecError as exc:
        raise SpecError(f"{what} file {path}: {exc}", field=exc.field) from None
    except ValueError as exc:  # json.JSONDecodeError
        raise SpecError(f"{what} file {path}: not valid JSON: {exc}") from None
    except Exception as exc:
        import yaml

        if not isinstance(exc, yaml.YAMLError):
            raise
        raise SpecError(f"{what} file {path}: not valid YAML: {exc}") from None
    if not isinstance(data, Mapping):
        raise SpecError(f"{what} file {path}: expected a mapping at the top level, got {type(data).__name__}")
    return dict(data)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise SpecError(f"duplicate key {k!r}", field=k)
        out[k] = v
    return out


def _load_yaml(stream: IO[str]) -> Any:
    """YAML read as the Go side (go-yaml v3) reads it: true/false are the only
    bools (yes/on are strings), integers as Go reads them after dropping
    underscores (012 is octal, 0b101 binary, 1_000 a thousand), 3e-4 a
    number, and a repeated key is an error."""
    import yaml

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
            seen = set()
            for key_node, _ in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.value != "<<":
                    if key_node.value in seen:
                        raise SpecError(
                            f"duplicate key {key_node.value!r} (line {key_node.start_mark.line + 1})",
                            field=key_node.value,
                        )
                    seen.add(key_node.value)
            return super().construct_mapping(node, deep=deep)

    def integer(loader: Any, node: Any) -> int | float:
        v = loader.construct_scalar(node).replace("_", "")
        sign, digits = (-1, v[1:]) if v[:1] == "-" else (1, v.lstrip("+"))
        if digits[:2].lower() in ("0b", "0o", "0x"):
            return sign * int(digits, 0)
        if len(digits) > 1 and digits[0] == "0":  # Go's base 0: a leading 0 is octal
            try:
                return sign * int(digits, 8)
            except ValueError:
                return sign * float(digits)  # 08 is not octal: a float, as in Go
        return sign * int(digits)

    Loader.yaml_implicit_resolvers = {}
    for tag, pattern, first in (
        ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
        ("int", r"^[-+]?(?:0[bB][01_]+|0[oO][0-7_]+|0[xX][0-9a-fA-F_]+|[0-9][0-9_]*)$", "-+0123456789"),
        (
            "float",
            r"^(?:[-+]?(?:\.[0-9][0-9_]*|[0-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9]+)?"
            r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
            "-+.0123456789",
        ),
        ("null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ):
        Loader.add_implicit_resolver(f"tag:yaml.org,2002:{tag}", re.compile(pattern), list(first))
    Loader.add_constructor("tag:yaml.org,2002:int", integer)
    return yaml.load(stream, Loader=Loader)  # Loader is a SafeLoader


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
