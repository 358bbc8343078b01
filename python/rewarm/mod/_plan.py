"""rewarm.mod.plan: Mixture-of-Depths retention plans from the Go planner."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rewarm._client import Backend, int_arg, shared_client
from rewarm._errors import SpecError

# The planner's limit on the entries of per-sample tables (mod.MaxPerSampleEntries).
MAX_PER_SAMPLE_ENTRIES = 1 << 23


@dataclass(frozen=True)
class LayerPlan:
    index: int
    route: bool
    ratio: float
    k: int
    kv_capacity: int
    # k_by_tokens[n]: the k of a sample with n valid routable tokens (routed
    # layers of a per_sample plan; empty otherwise).
    k_by_tokens: tuple[int, ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class Summary:
    mean_ratio: float
    kv_ratio: float
    flops_dense: float
    flops_mod: float
    flops_ratio: float


@dataclass(frozen=True)
class BucketPlan:
    tokens: int
    layers: tuple[LayerPlan, ...]
    summary: Summary


@dataclass(frozen=True)
class Plan:
    """One BucketPlan per routable-token count; ``layers`` and ``summary`` are
    the first bucket's (the only one unless buckets were given)."""

    buckets: tuple[BucketPlan, ...]
    text_tokens: int

    @property
    def layers(self) -> tuple[LayerPlan, ...]:
        return self.buckets[0].layers

    @property
    def summary(self) -> Summary:
        return self.buckets[0].summary

    @property
    def tokens(self) -> int:
        return self.buckets[0].tokens

    def for_tokens(self, n: int) -> BucketPlan:
        """The bucket for n routable tokens: the smallest one that holds n
        (pad the routable span to its size and mark the padding invalid)."""
        n = int_arg(n, "tokens")
        if n < 1:
            raise SpecError(f"tokens={n}: a bucket holds at least 1 routable token")
        for b in self.buckets:
            if b.tokens >= n:
                return b
        raise SpecError(f"{n} routable tokens exceed the largest bucket ({self.buckets[-1].tokens})")


def plan(
    num_layers: int,
    tokens: int | None = None,
    schedule: Mapping[str, Any] | None = None,
    rounding: Mapping[str, Any] | None = None,
    *,
    buckets: Sequence[int] | None = None,
    text_tokens: int = 0,
    hidden_size: int = 4096,
    ffn_size: int = 11008,
    per_sample: bool | None = None,
    backend: Backend = "auto",
) -> Plan:
    """Plan per-layer token retention. ``schedule`` defaults to p-MoD's
    progressive ratio decay ``{"kind": "prd", "shift": 0.5, "max_ratio": 0.85,
    "min_ratio": 0.15}``; ``rounding`` to ``{"mode": "floor", "precision":
    "float32", "multiple": 1, "align": "k"}`` (bit-exact with p-MoD).
    ``per_sample`` adds each routed layer's ``k_by_tokens`` table, which
    MoDLayer needs for batches that pad samples to a bucket (``valid_mask``);
    by default it is on where the tables surely fit (num_layers × the
    buckets' counts within the planner's limit of 2^23 entries).
    See docs/mod.md."""
    spec: dict[str, Any] = {
        "num_layers": num_layers,
        "text_tokens": text_tokens,
        "hidden_size": hidden_size,
        "ffn_size": ffn_size,
    }
    num_layers = int_arg(num_layers, "num_layers")
    if tokens is not None:
        tokens = int_arg(tokens, "tokens")
    if buckets is not None:
        if not isinstance(buckets, Sequence) or isinstance(buckets, str):
            raise SpecError(
                f'mod: field "buckets" = {buckets!r:.80}: expected a list of token counts', field="buckets"
            )
        buckets = [int_arg(n, f"buckets[{i}]") for i, n in enumerate(buckets)]
    if per_sample is None:  # where the tables surely fit: every layer routed
        counts = sum(n + 1 for n in {*(buckets or ()), *([tokens] if tokens else [])})
        per_sample = num_layers * counts <= MAX_PER_SAMPLE_ENTRIES
    spec["per_sample"] = per_sample
    if tokens is not None:
        spec["tokens"] = tokens
    if buckets is not None:
        spec["buckets"] = list(buckets)
    for name, value, example in (
        ("schedule", schedule, '{"kind": "prd"}'),
        ("rounding", rounding, '{"mode": "floor"}'),
    ):
        if value is None:
            continue
        if not isinstance(value, Mapping):
            raise SpecError(
                f'mod: field "{name}" = {value!r:.80}: expected a mapping such as {example}', field=name
            )
        spec[name] = dict(value)
    client = shared_client(backend)
    try:
        raw = client.mod_plan(spec)
    finally:
        client.close()
    out = []
    for b in raw.buckets:
        s = b.summary
        out.append(
            BucketPlan(
                tokens=b.tokens,
                layers=tuple(
                    LayerPlan(x.index, x.route, x.ratio, x.k, x.kv_capacity, tuple(x.k_by_tokens))
                    for x in b.layers
                ),
                summary=Summary(s.mean_ratio, s.kv_ratio, s.flops_dense, s.flops_mod, s.flops_ratio),
            )
        )
    return Plan(buckets=tuple(out), text_tokens=raw.text_tokens)
