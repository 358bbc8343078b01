"""rewarm.wrap: a torch optimizer whose learning rate comes from the Go core.

The wrapper keeps one number, ``n``, the count of updates applied. Between
steps every param group's ``lr`` (and, when the schedule sets them,
``momentum``/``betas[0]`` and ``weight_decay``) holds the values of update n+1,
the next one, as torch's LR schedulers leave them; ``step()`` sets them again,
runs the inner optimizer, counts the update and shows the values of the update
after it. Values are fetched from Go a window at a time: they are a pure
function of (spec, re-plans, reports, n), and any re-plan or report made
through this object drops the window and fetches it again.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import numbers
import os
import re
import struct
import sys
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from types import FrameType
from typing import Any, Literal

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.hooks import RemovableHandle

from rewarm import _transport
from rewarm._client import Backend, Client, GroupSpec, SessionInfo, connect, int_arg
from rewarm._errors import ForkError, RewarmError, SessionNotFound, SpecError
from rewarm._spec import SpecLike, load_spec

STATE_FORMAT = 1
_F32 = struct.Struct("f")
# Steps fetched per round trip. A socket round trip costs tens of microseconds
# and an in-process call a few, and each Go call also disturbs the caches the
# next torch steps run in; 4096 steps amortize both to a fraction of a
# microsecond (see bench/bench_step.py).
DEFAULT_WINDOW = 4096
MAX_VALUES_PER_CALL = 1 << 16  # the dispatcher's per-request cap on count

GroupLike = GroupSpec | Mapping[str, float]
# The param-group keys a group's GroupSpec is read from, with their GroupSpec field.
GROUP_KEYS = (
    ("lr_mult", "multiplier"),
    ("rewarm_min_lr", "min_lr"),
    ("rewarm_peak_lr", "peak_lr"),
    ("wd_mult", "wd_mult"),
)
# The keys that set a group's rate apart from the schedule's.
_RATE_KEYS = ("lr_mult", "rewarm_min_lr", "rewarm_peak_lr")


_KEY_OF_FIELD = {field: key for key, field in GROUP_KEYS}


def _with_key(e: SpecError) -> SpecError:
    """Name the param-group key behind a group field the Go side refused
    (groups[1].multiplier is the group's lr_mult)."""
    m = re.fullmatch(r"groups\[\d+\]\.(\w+)", e.field)
    field = m.group(1) if m else ""
    key = _KEY_OF_FIELD.get(field, field)
    if key == field:
        return e
    return SpecError(f"{e} (the param-group key {key})", code=e.code, field=e.field)


def _number(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{what}={v!r:.80}: expected a number")
    return float(v)


def _group_spec(g: GroupLike, i: int = 0) -> GroupSpec:
    if isinstance(g, GroupSpec):
        return g
    if not isinstance(g, Mapping):
        raise TypeError(
            f"groups[{i}]={g!r:.80}: expected a dict (multiplier, min_lr, peak_lr, wd_mult) or GroupSpec"
        )
    unknown = set(g) - {"multiplier", "min_lr", "peak_lr", "wd_mult"}
    if unknown:
        raise SpecError(
            f"groups[{i}]: unknown keys {sorted(unknown)} (use multiplier, min_lr, peak_lr, wd_mult)",
            field=f"groups[{i}].{sorted(unknown)[0]}",
        )
    return GroupSpec(**{k: _number(v, f"groups[{i}].{k}") for k, v in g.items()})


def _given_fields(spec: GroupSpec) -> set[str]:
    """The fields of a GroupSpec that were given (not None).
    GroupSpec(multiplier=2.0) sets the multiplier only: it neither writes a
    wd_mult into the group nor clashes with the group's own (a no-decay
    group's wd_mult 0), just as a dict that leaves the key out."""
    return {f.name for f in dataclasses.fields(spec) if getattr(spec, f.name) is not None}


def _keys_from_args(
    pgs: Sequence[Mapping[str, Any]],
    multipliers: Sequence[float] | None,
    groups: Sequence[GroupLike] | None,
) -> list[dict[str, float]]:
    """The group keys that wrap(multipliers=...) or wrap(groups=...) sets, per
    group, checked against the keys the groups already hold."""
    if multipliers is None and groups is None:
        return [{} for _ in pgs]
    arg = "multipliers" if multipliers is not None else "groups"
    entries = multipliers if multipliers is not None else groups
    if not isinstance(entries, Sequence) or isinstance(entries, str):
        raise TypeError(f"{arg}={entries!r:.80}: expected a list with one entry per param group")
    # Each entry's spec and the fields it gives: a mapping gives its own keys.
    given: list[tuple[GroupSpec, set[str]]] = (
        [
            (GroupSpec(multiplier=_number(m, f"multipliers[{i}]")), {"multiplier"})
            for i, m in enumerate(multipliers)
        ]
        if multipliers is not None
        else [
            (_group_spec(g, i), _given_fields(g) if isinstance(g, GroupSpec) else set(g))
            for i, g in enumerate(groups or ())
        ]
    )
    if len(given) != len(pgs):
        raise SpecError(
            f"{arg} has {len(given)} entries but the optimizer has {len(pgs)} param groups", field=arg
        )
    out = []
    for i, ((spec, fields), g) in enumerate(zip(given, pgs, strict=True)):
        keys: dict[str, float] = {}
        for key, field in GROUP_KEYS:
            v = getattr(spec, field)
            if v is None or field not in fields:
                continue
            if key in g and g[key] != v:
                raise SpecError(
                    f"param_groups[{i}][{key!r}] = {g[key]!r}, but {arg}[{i}] sets {field}={v!r}: "
                    "give it one way",
                    field=f"{arg}[{i}].{field}",
                )
            keys[key] = float(v)
        out.append(keys)
    return out


KeySig = tuple[int, tuple[str, ...], tuple[Any, ...]]


def _keys_of(groups: Sequence[Mapping[str, Any]]) -> list[KeySig]:
    """Per group: its size, which of the GROUP_KEYS it has and their raw values.
    A key added, removed or changed changes this (step() checks it cheaply)."""
    out = []
    for g in groups:
        present = tuple(k for k, _ in GROUP_KEYS if k in g)
        out.append((len(g), present, tuple(_key_value(g[k]) for k in present)))
    return out


def _key_value(v: Any) -> Any:
    """A tensor key as step() compares it. On the CPU by value, which catches
    every kind of change. Elsewhere by identity and version counter, since
    .item() would sync a CUDA tensor on every step: an in-place torch op
    (fill_, copy_) bumps the version, a write through .data does not.
    Inference tensors keep no version: by value."""
    if not isinstance(v, torch.Tensor):
        return v
    if v.device.type == "cpu" and v.numel() == 1:
        return v.item()
    try:
        return _TensorKey(v, v._version)
    except RuntimeError:
        return v.item() if v.numel() == 1 else _TensorKey(v, -1)


class _TensorKey:
    """A tensor by identity (held, so a replacement can never reuse its id)
    and version counter. Compared without reading the tensor."""

    __slots__ = ("tensor", "version")

    def __init__(self, tensor: torch.Tensor, version: int) -> None:
        self.tensor, self.version = tensor, version

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _TensorKey) and other.tensor is self.tensor and other.version == self.version

    __hash__ = None  # type: ignore[assignment]


def _spec_from_keys(g: Mapping[str, Any], k: int) -> GroupSpec:
    """Group k's GroupSpec from its keys (the ranges themselves are checked in Go)."""
    vals: dict[str, float | None] = {}
    for key, field in GROUP_KEYS:
        v = g.get(key)
        if v is None:
            vals[field] = None if field in ("min_lr", "peak_lr") else 1.0
            continue
        # float() would also take "0.5" and True: only numbers (and one-element tensors) are rates.
        ok = not isinstance(v, bool) and isinstance(v, (numbers.Real, torch.Tensor))
        try:
            if not ok:
                raise TypeError
            vals[field] = float(v)
        except (TypeError, ValueError, RuntimeError):
            raise SpecError(f"param group {k}: {key}={v!r:.80}: must be a number", field=key) from None
    return GroupSpec(**vals)  # type: ignore[arg-type]


def _set_value(g: dict[str, Any], key: str, v: float) -> None:
    """g[key] = v, keeping a tensor a tensor (as torch's schedulers do)."""
    cur = g.get(key)
    if isinstance(cur, torch.Tensor):
        cur.fill_(v)
    else:
        g[key] = v


def _unshare(groups: Sequence[dict[str, Any]], key: str) -> None:
    """Give each group its own tensor for key: torch puts one lr tensor given to
    the constructor in every group, and filling it per group in place would
    leave all of them at the last group's value."""
    seen: set[int] = set()
    for g in groups:
        v = g.get(key)
        if isinstance(v, torch.Tensor):
            if id(v) in seen:
                g[key] = v = v.clone()
            seen.add(id(v))


def _norms_by_device(grads: Sequence[torch.Tensor], ord: float) -> dict[torch.device, torch.Tensor]:
    """The ord-norm of the gradients on each device, left on that device (in
    the order the devices first appear). torch's foreach ops take the tensors
    of one device only, and a model split over GPUs or offloaded to the CPU
    (HF device_map="auto", pipeline stages) has its gradients on several."""
    by_device: dict[torch.device, list[torch.Tensor]] = {}
    for t in grads:
        by_device.setdefault(t.device, []).append(t)
    return {
        device: torch.linalg.vector_norm(torch.stack(torch._foreach_norm(ts, ord)), ord)
        for device, ts in by_device.items()
    }


def _total_norm(grads: Sequence[torch.Tensor], ord: float) -> torch.Tensor:
    """The ord-norm of all the gradients taken as one vector, on the first
    gradient's device: each device's norm, combined there with the same ord
    (the largest of them for ord=inf)."""
    parts = list(_norms_by_device(grads, ord).values())
    if len(parts) == 1:
        return parts[0]
    device = parts[0].device
    return torch.linalg.vector_norm(torch.stack([t.to(device) for t in parts]), ord)


def _norms_from_state(raw: Any) -> list[float]:
    """The grad_norms entry of a rewarm_state(): a list of floats (absent before it was saved)."""
    if isinstance(raw, (str, bytes, Mapping)) or not isinstance(raw, Sequence):
        raise SpecError(f"rewarm state grad_norms={raw!r:.80}: expected a list of numbers")
    try:
        return [float(x) for x in raw]
    except (TypeError, ValueError):
        raise SpecError(f"rewarm state grad_norms={raw!r:.80}: expected a list of numbers") from None


DCP_STATE_DICT = "torch.distributed.checkpoint.state_dict"
_is_compiling = torch.compiler.is_compiling
# Set while a compiled region runs (also in the eager stretch after a graph
# break); None otherwise. A private hook: absent, it reads as never set.
_dynamo_callback: Callable[[], Any] = getattr(
    getattr(getattr(torch._C, "_dynamo", None), "eval_frame", None), "get_eval_frame_callback", lambda: None
)


def _called_by_dcp_init() -> bool:
    """Whether torch.distributed.checkpoint's _init_optim_state is calling step():
    it zeroes every group's lr and steps once with zero gradients to create the
    optimizer state, an update that must neither run at a scheduled rate nor count."""
    mod = sys.modules.get(DCP_STATE_DICT)
    code = getattr(getattr(mod, "_init_optim_state", None), "__code__", None)
    if code is None:
        return False
    # From step()'s helpers up to its caller, through any step wrappers.
    f: FrameType | None = sys._getframe(2)
    for _ in range(8):
        if f is None:
            return False
        if f.f_code is code:
            return True
        f = f.f_back
    return False


class RewarmOptimizer(Optimizer):
    """A torch optimizer driven by a rewarm schedule. Create it with wrap().

    ``param_groups``, ``state`` and ``defaults`` are the inner optimizer's. A
    group's settings are its param-group keys: ``lr_mult`` (multiplier,
    default 1), ``wd_mult`` (weight-decay multiplier, default 1), and
    ``rewarm_min_lr`` / ``rewarm_peak_lr`` (absolute range the schedule is
    remapped to). ``multipliers[i]`` / ``groups[i]`` given to wrap() are
    written into group i's keys (a key the group already holds with another
    value is an error). A key changed mid-run applies from the next update on,
    and the keys are saved with the param groups in state_dict().
    """

    def __init__(
        self,
        optimizer: Optimizer,
        schedule: SpecLike,
        backend: Backend = "auto",
        multipliers: Sequence[float] | None = None,
        groups: Sequence[GroupLike] | None = None,
        window: int | None = None,
        name: str = "",
        track_grad_norm: Literal["l1", "l2"] | None = None,
    ) -> None:
        # Optimizer.__init__ is deliberately not called: all optimizer state
        # lives in the inner optimizer. Only hooks live here: the state-dict
        # ones, and step hooks registered on this wrapper (they get the wrapper
        # and see the update counted, as torch's do for their optimizer).
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"rewarm.wrap needs a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if isinstance(optimizer, RewarmOptimizer):
            raise TypeError("this optimizer is already wrapped by rewarm")
        if multipliers is not None and groups is not None:
            raise SpecError("give multipliers or groups, not both", field="groups")
        if track_grad_norm not in (None, "l1", "l2"):
            raise SpecError(
                f"track_grad_norm={track_grad_norm!r}: expected None, 'l1' or 'l2'", field="track_grad_norm"
            )
        self.optimizer = optimizer
        self._optimizer_state_dict_pre_hooks = OrderedDict()
        self._optimizer_state_dict_post_hooks = OrderedDict()
        self._optimizer_load_state_dict_pre_hooks = OrderedDict()
        self._optimizer_load_state_dict_post_hooks = OrderedDict()
        self._step_pre_hooks: OrderedDict[int, Callable[..., Any]] = OrderedDict()
        self._step_post_hooks: OrderedDict[int, Callable[..., Any]] = OrderedDict()
        # The keys wrap() writes into each group: checkpoints made before they
        # were written lack them, and load_state_dict puts them back.
        if not isinstance(name, str):
            raise TypeError(f"name={name!r}: expected a str")
        if window is not None and (isinstance(window, bool) or not isinstance(window, int)):
            raise TypeError(f"window={window!r}: expected an int")
        self._window = DEFAULT_WINDOW if window is None else window
        if not 1 <= self._window <= MAX_VALUES_PER_CALL:
            raise SpecError(f"window={window}: must be between 1 and {MAX_VALUES_PER_CALL}", field="window")
        spec = load_spec(schedule)
        self._wrap_keys = _keys_from_args(optimizer.param_groups, multipliers, groups)
        # Written into the groups now, taken back if anything below fails,
        # so a failed wrap() leaves the optimizer as it was.
        added = [
            [k for k in keys if k not in g]
            for g, keys in zip(optimizer.param_groups, self._wrap_keys, strict=True)
        ]
        for g, keys in zip(optimizer.param_groups, self._wrap_keys, strict=True):
            g.update(keys)
        opened = None
        try:
            self._set_keys(_keys_of(optimizer.param_groups))
            self._groups = self._group_specs()
            self._client: Client = connect(backend)
            info = self._client.open_session(spec, name=name)
            opened = info.session_id
            self._session = info.session_id
            self._schedule = info.schedule
            self._name = name
            self._n = 0
            self._closed = False
            # rows[i] holds the per-group rates of update cache_start+i+1; momentum
            # and weight decay are None unless the schedule sets them.
            self._rows: list[list[float]] = []
            self._momentum: list[float] | None = None
            self._wd_rows: list[list[float]] | None = None
            self._cache_start = 0
            self._rates_only = True  # neither momentum nor weight decay is scheduled
            self._inprocess = self._client.kind == "inprocess"
            self._norm_ord = {"l1": 1.0, "l2": 2.0}.get(track_grad_norm or "")
            self.grad_norms: list[float] = []  # one per update counted (see _record_grad_norm)
            self._warned_norm = False
            self._ctl_seq = 0  # the newest `rewarm ctl` control seen
            self._ctl_epoch = 0  # the sidecar numbering it belongs to (0: not seen yet)
            self._polled_at = -1
            self._warned_lr = False  # see _warn_if_lr_set_outside
            self._shown: list[float] = []  # the rates shown in the groups after the last update
            self._last_lrs: list[float] = list(self.lrs_at(0))
            self._used: list[float] = self._last_lrs  # the rates of the update in progress
            self._check_momentum()
            self._warn_about_group_keys(optimizer.param_groups)
            self._scheduler: RewarmLRScheduler | None = None
            self._show(0)
            # Loading the inner optimizer alone (a plain torch checkpoint) writes
            # the saved lr into the groups: show the schedule's again, so the
            # groups read right and the next step does not take it for an lr
            # set from outside. A weak reference: the hook must not keep us alive.
            this = weakref.ref(self)
            optimizer.register_load_state_dict_post_hook(lambda _opt: _reshow(this))
        except BaseException:
            for g, new_keys in zip(optimizer.param_groups, added, strict=True):
                for k in new_keys:
                    g.pop(k, None)
            if opened is not None:
                with contextlib.suppress(Exception):
                    self._client.close_session(opened)
            raise

    # --- the schedule --------------------------------------------------------

    @property
    def schedule(self) -> dict[str, Any]:
        """The validated spec, with every default filled in (a copy)."""
        return copy.deepcopy(self._schedule)

    @property
    def backend(self) -> str:
        return self._client.kind

    @property
    def steps_applied(self) -> int:
        """n: the number of optimizer updates applied so far."""
        return self._n

    def _group_specs(self, pgs: Sequence[Mapping[str, Any]] | None = None) -> list[GroupSpec]:
        pgs = self.optimizer.param_groups if pgs is None else pgs
        return [_spec_from_keys(g, k) for k, g in enumerate(pgs)]

    def _set_keys(self, keys: list[KeySig]) -> None:
        self._keys = keys
        # What step()'s hot path compares: each group's size, and whether any
        # group has a GROUP_KEYS entry whose value could change in place.
        self._sizes = [size for size, _, _ in keys]
        self._keyed = any(present for _, present, _ in keys)

    def _sync_groups(self) -> None:
        """Re-read the group specs when a group was added or one of its keys changed."""
        groups = self.optimizer.param_groups
        keys = _keys_of(groups)
        if keys == self._keys and len(self._groups) == len(groups):
            return
        specs = self._group_specs(groups)
        self._set_keys(keys)
        if specs != self._groups:
            self._groups = specs
            self._invalidate()

    def _invalidate(self) -> None:
        self._rows = []

    def _check_open(self, needs: str) -> None:
        if self._closed:
            raise SessionNotFound(
                f"this optimizer was closed (close()), which ends its schedule session, and {needs} "
                "needs it: close it once training is done",
                code="NOT_FOUND",
            )

    def _fetch(
        self, n: int, specs: list[GroupSpec]
    ) -> tuple[list[list[float]], list[float] | None, list[list[float]] | None]:
        """The window from update n+1 on: per-group rates, momentum, per-group weight decay."""
        self._check_open(f"the rates of update {n + 1} on")
        if self._inprocess and _transport.in_forked_child():
            raise ForkError(
                f"rewarm: this optimizer's in-process backend was loaded by a parent of process "
                f"{os.getpid()}; {_transport.FORK_HELP}",
                code="FORKED",
            )
        g = len(specs)
        # At least two updates: step() fetches before the inner step (update
        # n+1 and n+2), so a failed fetch never follows an applied update.
        count = max(2, min(self._window, MAX_VALUES_PER_CALL // max(1, g)))
        try:
            v = self._client.get_values(self._session, n, count, specs)
        except SpecError as e:
            raise _with_key(e) from None
        rows = [v.lr[i : i + g] for i in range(0, len(v.lr), g)]
        wd = [v.weight_decay[i : i + g] for i in range(0, len(v.weight_decay), g)] or None
        return rows, v.momentum or None, wd

    def _fill(self, n: int) -> None:
        self._rows, self._momentum, self._wd_rows = self._fetch(n, self._groups)
        self._cache_start = n
        self._rates_only = self._momentum is None and self._wd_rows is None

    def _index(self, n: int) -> int:
        self._sync_groups()
        i = n - self._cache_start
        if not 0 <= i < len(self._rows):
            self._fill(n)
            i = 0
        return i

    def _apply(self, groups: list[dict[str, Any]], i: int) -> None:
        """Write row i of the window (update cache_start+i+1) into the groups."""
        if len(groups) > 1:
            _unshare(groups, "lr")
        self._shown = self._rows[i]
        for group, lr in zip(groups, self._rows[i]):  # noqa: B905 - lengths checked by the caller
            cur = group.get("lr")
            if type(cur) is not float and isinstance(cur, torch.Tensor):
                cur.fill_(lr)  # torch keeps a tensor lr a tensor (fused/capturable steps read it)
            else:
                group["lr"] = lr
        if self._momentum is not None or self._wd_rows is not None:
            self._apply_extras(groups, i)

    def _show(self, n: int) -> None:
        """Set every group's values to those of update n+1, as torch's schedulers
        leave a group between steps."""
        self._apply(self.optimizer.param_groups, self._index(n))

    def _refresh(self) -> None:
        """Drop the window after a re-plan or report, and show the new next values."""
        self._invalidate()
        self._show(self._n)

    def lrs_at(self, n: int) -> list[float]:
        """The per-group learning rates that update n+1 uses."""
        i = self._index(int_arg(n, "n"))  # may refill the rows
        return list(self._rows[i])  # a copy: the row is what later updates apply

    def momentum_at(self, n: int) -> float | None:
        """The momentum (or beta1) of update n+1, or None when not scheduled."""
        i = self._index(int_arg(n, "n"))
        return None if self._momentum is None else self._momentum[i]

    def weight_decay_at(self, n: int) -> list[float] | None:
        """The per-group weight decay of update n+1, or None when not scheduled."""
        i = self._index(int_arg(n, "n"))
        return None if self._wd_rows is None else list(self._wd_rows[i])

    def _warn_about_group_keys(self, groups: Sequence[Mapping[str, Any]], first: int = 0) -> None:
        """Warn where a group's own settings would silently do nothing: torch
        users give groups their own lr, which the schedule replaces, and
        wd_mult scales only a scheduled weight decay."""
        if self._wd_rows is None:
            odd = [first + k for k, g in enumerate(groups) if float(g.get("wd_mult", 1.0)) != 1.0]
            if odd:
                warnings.warn(
                    f"param group(s) {odd} set wd_mult, but the schedule has no weight_decay, so wd_mult has "
                    "no effect and each group's own weight_decay applies as it is; add a weight_decay "
                    "schedule (weight_decay: {start: ...}) or set the groups' weight_decay instead",
                    UserWarning,
                    stacklevel=4,
                )
        else:
            wds = sorted(
                {
                    float(g["weight_decay"])
                    for g in self.optimizer.param_groups
                    if "weight_decay" in g and "wd_mult" not in g
                }
            )
            if len(wds) > 1:
                warnings.warn(
                    f"the param groups have different weight_decay ({', '.join(f'{v:g}' for v in wds)}) "
                    "and no wd_mult, and the schedule's weight_decay replaces them all; give no-decay "
                    "groups wd_mult: 0 (and others their ratio) to keep them apart",
                    UserWarning,
                    stacklevel=4,
                )
        # Only the groups with no rate key of their own lose their lr's meaning.
        lrs = sorted(
            {
                float(g["lr"])
                for g in self.optimizer.param_groups
                if "lr" in g and not any(k in g for k in _RATE_KEYS)
            }
        )
        if len(lrs) > 1:
            warnings.warn(
                f"the param groups have different lr ({', '.join(f'{v:g}' for v in lrs)}), and rewarm sets "
                "every group's lr to the schedule's rate times its lr_mult, so those values are replaced; "
                "to keep their ratios give each group an lr_mult (wrap(..., multipliers=[...])) or an "
                "absolute range (rewarm_min_lr / rewarm_peak_lr)",
                UserWarning,
                stacklevel=4,
            )

    def _check_momentum(self) -> None:
        if self._momentum is None:
            return
        for k, g in enumerate(self.optimizer.param_groups):
            if "betas" not in g and "momentum" not in g:
                raise SpecError(
                    f"the schedule sets momentum, but param group {k} of {type(self.optimizer).__name__} has "
                    "neither 'momentum' nor 'betas'; drop the momentum schedule (cycle_momentum: false)"
                )

    def get_last_lr(self) -> list[float]:
        """The learning rates the most recent update used (f(0) before any)."""
        return list(self._last_lrs)

    # --- re-planning ---------------------------------------------------------

    def replan(self, op: str, at_step: int | None = None, **args: Any) -> SessionInfo:
        """Change the schedule from update at_step+1 on (default: the next update).

        - ``replan("extend", total_steps=N, mode="continuous"|"proportional")``
        - ``replan("anneal", steps=L, shape="cosine"|"linear"|"exp"|"1-sqrt", min_lr=None)``
        - ``replan("new_stage", schedule={...})``

        Re-plans are kept in the session (and in state_dict()), so the rates
        stay a pure function of (spec, re-plans, n).
        """
        self._check_open("replan()")
        at = self._n if at_step is None else int_arg(at_step, "at_step")
        if at < self._n:
            raise SpecError(
                f"at_step={at}: {self._n} updates were already applied; re-plans cannot rewrite them",
                field="at_step",
            )
        if op == "new_stage" and "schedule" in args:
            args["schedule"] = load_spec(args["schedule"])
        info = self._client.replan(self._session, at, op, **args)
        self._refresh()
        return info

    def broadcast_replans(
        self, replans: Sequence[Mapping[str, Any]] | None = None, src: int = 0, skip_failed: bool = False
    ) -> list[dict]:
        """Collective: every rank calls it at the same step; rank ``src``'s list of
        re-plans (dicts with ``op`` and its arguments, ``at_step`` optional) is
        broadcast with torch.distributed and applied on every rank, so all ranks
        switch at the same update. Returns the re-plans applied. With
        ``skip_failed`` a re-plan the schedule refuses is skipped with a warning
        (every rank holds the same plan, so every rank skips it) instead of
        raising."""
        import torch.distributed as dist

        payload: list[Any] = [None]
        if not dist.is_available() or not dist.is_initialized():
            payload = [[dict(r) for r in replans or ()]]
        else:
            if dist.get_rank() == src:
                payload = [[{**r, "at_step": r.get("at_step", self._n)} for r in replans or ()]]
            dist.broadcast_object_list(payload, src=src)
        applied = []
        for r in payload[0] or []:
            r = dict(r)
            op = r.pop("op")
            try:
                self.replan(op, **r)
            except RewarmError as exc:
                if not skip_failed:
                    raise
                warnings.warn(
                    f"rewarm: skipping a control ({op} at step {r.get('at_step')}): {exc}", stacklevel=3
                )
                continue
            applied.append({"op": op, **r})
        return applied

    def poll_control(self, src: int = 0, every: int = 1) -> list[dict]:
        """Pick up re-plans posted with `rewarm ctl` and apply them on every rank.

        Call it once per step on every rank (it is a collective under
        torch.distributed): rank ``src`` polls its sidecar (at most once per
        step), broadcasts what it found, and every rank applies it, so all
        ranks on all nodes switch at the control's ``at_step``. A control whose
        step has already passed is skipped with a warning. Without a sidecar
        there is nothing to poll and it returns []. With ``every=k`` the
        collective runs only when k divides the step count, for jobs where a
        broadcast per step costs too much.
        """
        import torch.distributed as dist

        every = int_arg(every, "every", lo=1)
        if every > 1 and self._n % every:
            return []
        distributed = dist.is_available() and dist.is_initialized()
        is_src = not distributed or dist.get_rank() == src
        pending: list[dict] | None = None
        if is_src and self._polled_at != self._n:
            self._polled_at = self._n
            pending = []
            if self._client.kind == "socket":
                try:
                    poll = self._client.poll_controls(
                        self._ctl_seq, self._session, self._n, control_epoch=self._ctl_epoch
                    )
                except Exception as exc:  # the job must not stop for a control channel
                    warnings.warn(f"rewarm: polling for controls failed: {exc}", stacklevel=2)
                    poll = None
                for c in poll.controls if poll is not None else ():
                    epoch = int(c.pop("epoch"))
                    if epoch != self._ctl_epoch:  # another sidecar's numbering
                        self._ctl_epoch, self._ctl_seq = epoch, 0
                    self._ctl_seq = max(self._ctl_seq, int(c.pop("seq")))
                    target = c.pop("target_name")
                    if target and target != self._name:
                        continue
                    if c["at_step"] < self._n:
                        warnings.warn(
                            f"rewarm: skipping a control for step {c['at_step']}: {self._n} updates were "
                            "already applied; post controls further ahead",
                            stacklevel=2,
                        )
                        continue
                    pending.append(c)
                if poll is not None and poll.epoch:
                    # Seen up to the newest number, also what was posted
                    # before this job opened and never sent to it.
                    if poll.epoch != self._ctl_epoch:
                        self._ctl_epoch, self._ctl_seq = poll.epoch, 0
                    self._ctl_seq = max(self._ctl_seq, poll.latest_seq)
        elif is_src:
            pending = []
        return self.broadcast_replans(pending, src=src, skip_failed=True)

    def report(self, metric: float) -> None:
        """Report a metric observed after the updates applied so far (for
        plateau schedules)."""
        self._check_open("report()")
        self._client.report(self._session, self._n, metric)
        self._refresh()

    # --- torch.optim.Optimizer face ---------------------------------------

    @property  # type: ignore[override]
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    @param_groups.setter
    def param_groups(self, value: list[dict[str, Any]]) -> None:
        self.optimizer.param_groups = value

    @property  # type: ignore[override]
    def state(self) -> Any:
        return self.optimizer.state

    @state.setter
    def state(self, value: Any) -> None:
        self.optimizer.state = value

    @property  # type: ignore[override]
    def defaults(self) -> dict[str, Any]:
        return self.optimizer.defaults

    @defaults.setter
    def defaults(self, value: dict[str, Any]) -> None:
        self.optimizer.defaults = value

    def step(self, closure: Callable[[], float] | None = None) -> Any:  # type: ignore[override]
        """Set each group's values for update n+1, run the inner step, count it,
        and show the values of update n+2. Step hooks registered on this
        wrapper run around all of it."""
        if _is_compiling() or _dynamo_callback() is not None:
            # Traced, or run by a compiled caller after a graph break: only the
            # inner step may be compiled; the bookkeeping compiled frame by
            # frame would specialise on the counter and recompile per update.
            return self._traced_step(closure)
        if self._step_pre_hooks or self._step_post_hooks:
            args, kwargs = self._run_pre_hooks(closure)
            loss = self._step(*args[1:], **kwargs)
            self._run_post_hooks(args, kwargs)
            return loss
        return self._step(closure)

    def _run_pre_hooks(self, closure: Callable[[], float] | None) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Run the step pre-hooks as torch's Optimizer does: ``hook(self, args,
        kwargs)`` with ``args = (self, *step's positional args)``, and a hook
        may return ``(new_args, new_kwargs)`` to replace them. Returned args
        that do not start with this optimizer (rewarm's earlier form, e.g.
        ``((), {"closure": f})``) get it put in front."""
        args: tuple[Any, ...] = (self,) if closure is None else (self, closure)
        kwargs: dict[str, Any] = {}
        for pre in list(self._step_pre_hooks.values()):
            out = pre(self, args, kwargs)
            if out is not None:
                if not (isinstance(out, tuple) and len(out) == 2):
                    raise RuntimeError(f"a step pre-hook must return None or (args, kwargs), got {out!r:.80}")
                args, kwargs = tuple(out[0]), out[1]
                if not args or args[0] is not self:
                    args = (self, *args)
        return args, kwargs

    def _run_post_hooks(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        for post in list(self._step_post_hooks.values()):
            post(self, args, kwargs)

    def _step(self, closure: Callable[[], float] | None = None) -> Any:
        inner = self.optimizer
        groups = inner.param_groups
        rows = self._rows
        i = self._n - self._cache_start
        sizes = self._sizes
        # Hot path: only rates are scheduled, this update's and the next one's are
        # fetched, and every group still holds, unchanged, the rate shown after the
        # last update (so no group was added, resized or re-keyed, no lr was set by
        # hand or turned into a tensor, and this is not DCP's state-creating step,
        # which zeroes the lrs). Everything else takes _slow_step.
        if not (
            0 <= i < len(rows) - 1
            and self._rates_only
            and len(groups) == len(sizes)
            and (not self._keyed or _keys_of(groups) == self._keys)
        ):
            return self._slow_step(closure)
        row = rows[i]
        # Index loops: zip() costs more than the work here.
        k = 0
        for group in groups:
            if group["lr"] is not row[k] or len(group) != sizes[k]:
                return self._slow_step(closure)
            k += 1  # noqa: SIM113 - enumerate() costs more here
        loss = inner.step() if closure is None else inner.step(closure)
        self._last_lrs = row
        self._n += 1
        if self._norm_ord is not None:
            self._record_grad_norm()
        if self._rows is not rows:  # a step hook re-planned or reported
            self._show(self._n)
        else:
            row, k = rows[i + 1], 0
            for group in groups:
                group["lr"] = row[k]
                k += 1  # noqa: SIM113
            self._shown = row
        return loss

    def _slow_step(self, closure: Callable[[], float] | None) -> Any:
        return self._step_between(closure, self._begin_update, self._end_update)

    def _traced_step(self, closure: Callable[[], float] | None) -> Any:
        # Under torch.compile only the inner step is traced; the bookkeeping runs
        # eagerly, so the counter and the fetched rates are never baked into a graph
        # (and do not cause a recompile per update). Step hooks run eagerly too.
        args, kwargs = self._run_pre_hooks_eager(closure)
        loss = self._step_between(
            _closure_arg(*args[1:], **kwargs), self._begin_update_eager, self._end_update_eager
        )
        self._run_post_hooks_eager(args, kwargs)
        return loss

    def _step_between(
        self, closure: Callable[[], float] | None, begin: Callable[[], bool], end: Callable[[], None]
    ) -> Any:
        inner = self.optimizer
        if begin():  # DCP's state-creating step: passed through, not counted
            return inner.step() if closure is None else inner.step(closure)
        loss = inner.step() if closure is None else inner.step(closure)
        end()
        return loss

    def _begin_update(self) -> bool:
        """Write update n+1's values into the groups; True for the step with which
        torch.distributed.checkpoint creates the optimizer state (lr 0, zero
        gradients), which is passed on as it is and not counted."""
        inner = self.optimizer
        if not inner.state and DCP_STATE_DICT in sys.modules and _called_by_dcp_init():
            return True
        groups = inner.param_groups
        i = self._n - self._cache_start
        # Hot path: this update's and the next one's values are already fetched
        # and no group was added or re-keyed. Otherwise fetch them now: a fetch
        # that fails must fail before the inner step, not after it.
        if not (
            0 <= i < len(self._rows) - 1
            and len(groups) == len(self._groups)
            and _keys_of(groups) == self._keys
        ):
            i = self._index(self._n)
            if i + 1 >= len(self._rows):
                self._fill(self._n)
                i = 0
        self._warn_if_lr_set_outside(groups)
        self._apply(groups, i)
        self._used = self._rows[i]
        return False

    def _warn_if_lr_set_outside(self, groups: list[dict[str, Any]]) -> None:
        """Warn (once) when a group's lr is not the one shown after the last
        update: something else (a torch LR scheduler, user code) set it, and
        this update overwrites it."""
        if self._warned_lr:
            return
        for k, (g, shown) in enumerate(zip(groups, self._shown)):  # noqa: B905 - a new group has none
            cur = g.get("lr")
            if isinstance(cur, torch.Tensor) and cur.device.type == "cpu" and cur.numel() == 1:
                # As the tensor holds it (a float32 lr rounds the rate shown). On
                # other devices reading it would cost a sync per step: not checked.
                t = cur
                cur = t.item()
                if t.dtype == torch.float32:  # the common case, without building a tensor each step
                    try:
                        shown = _F32.unpack(_F32.pack(shown))[0]
                    except OverflowError:  # past float32's range the tensor holds inf
                        shown = float("inf")
                elif t.dtype != torch.float64:
                    shown = torch.tensor(shown, dtype=t.dtype).item()
            if isinstance(cur, float) and cur != shown:
                self._warned_lr = True
                warnings.warn(
                    f"rewarm: param group {k}'s lr was set to {cur} outside rewarm (by a torch LR "
                    "scheduler?); this update uses the schedule's rate. Change rates with replan() "
                    "or the group's lr_mult instead",
                    stacklevel=7,  # the caller of step()
                )
                return

    def _end_update(self) -> None:
        """Count the update just made and show the next one's values."""
        self._last_lrs = self._used
        self._n += 1
        if self._norm_ord is not None:
            self._record_grad_norm()
        i = self._n - self._cache_start
        if not 0 <= i < len(self._rows):
            self._fill(self._n)
            i = 0
        self._apply(self.optimizer.param_groups, i)

    _begin_update_eager = torch._disable_dynamo(_begin_update)
    _end_update_eager = torch._disable_dynamo(_end_update)
    _run_pre_hooks_eager = torch._disable_dynamo(_run_pre_hooks)
    _run_post_hooks_eager = torch._disable_dynamo(_run_post_hooks)

    def _apply_extras(self, groups: list[dict[str, Any]], i: int) -> None:
        if self._momentum is not None:
            m = self._momentum[i]
            for g in groups:
                if "betas" in g:
                    b0 = g["betas"][0]
                    if isinstance(b0, torch.Tensor):
                        b0.fill_(m)
                    else:
                        g["betas"] = (m, *g["betas"][1:])
                else:
                    _set_value(g, "momentum", m)
        if self._wd_rows is not None:
            _unshare(groups, "weight_decay")
            for g, wd in zip(groups, self._wd_rows[i]):  # noqa: B905
                _set_value(g, "weight_decay", wd)

    def _record_grad_norm(self) -> None:
        """Append the total gradient norm of the update just counted, so that
        grad_norms[k] is update k+1's: NaN when no parameter had a gradient or
        the norm could not be read (a refined schedule drops NaN norms). It
        runs after the update is applied and counted, so it must not raise."""
        assert self._norm_ord is not None
        grads = [p.grad for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        norm = math.nan
        if grads:
            try:
                norm = float(_total_norm(grads, self._norm_ord))
            except Exception as exc:
                if not self._warned_norm:
                    self._warned_norm = True
                    warnings.warn(
                        f"rewarm: the gradient norm could not be computed ({type(exc).__name__}: "
                        f"{str(exc)[:200]}); grad_norms records NaN for such updates",
                        RuntimeWarning,
                        stacklevel=2,
                    )
        self.grad_norms.append(norm)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group to the inner optimizer. Its multiplier and range come from
        its keys (``lr_mult``, ``wd_mult``, ``rewarm_min_lr``, ``rewarm_peak_lr``),
        also when wrap() was given multipliers/groups; they are checked (in Go)
        before anything changes, and the group shows the next update's rate."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, got {type(param_group).__name__}")
        self._sync_groups()
        specs = [*self._groups, _spec_from_keys(param_group, len(self._groups))]
        window = self._fetch(self._n, specs)  # raises on a bad multiplier or range
        given_lr = "lr" in param_group
        self.optimizer.add_param_group(param_group)  # torch checks the params before it appends
        if given_lr:
            self._warn_about_group_keys([param_group], first=len(specs) - 1)
        self._groups = specs
        self._set_keys(_keys_of(self.optimizer.param_groups))
        self._rows, self._momentum, self._wd_rows = window
        self._cache_start = self._n
        self._rates_only = self._momentum is None and self._wd_rows is None
        self._apply(self.optimizer.param_groups, 0)

    def register_step_pre_hook(self, hook: Callable[..., Any]) -> RemovableHandle:
        """``hook(optimizer, args, kwargs) -> None | (args, kwargs)`` runs before
        each step(), as torch runs its optimizers' hooks: ``optimizer`` is this
        wrapper and ``args`` is ``(optimizer, *step's positional args)`` (the
        closure, if given, is ``args[1]``). Returned args replace them and
        should start with the optimizer too; args without it (rewarm's earlier
        form) are taken as step()'s own."""
        handle = RemovableHandle(self._step_pre_hooks)
        self._step_pre_hooks[handle.id] = hook
        return handle

    def register_step_post_hook(self, hook: Callable[..., Any]) -> RemovableHandle:
        """``hook(optimizer, args, kwargs)`` runs after each step(), once the
        update is counted: steps_applied, get_last_lr() and state_dict() are
        those after it. ``args`` and ``kwargs`` are those the step ran with
        (``args[0]`` is this wrapper), as in torch."""
        handle = RemovableHandle(self._step_post_hooks)
        self._step_post_hooks[handle.id] = hook
        return handle

    def rewarm_state(self) -> dict[str, Any]:
        """The schedule part of state_dict(): spec, n, the Go session snapshot
        (which also holds the re-plans and reports) and the gradient norms
        recorded so far (a list of floats, which torch.load(weights_only=True) reads)."""
        if self._closed:
            raise SessionNotFound(
                "this optimizer was closed (close()), which ends its schedule session: save its "
                "state_dict() before closing it",
                code="NOT_FOUND",
            )
        return {
            "format": STATE_FORMAT,
            "schedule": self.schedule,
            "step": self._n,
            "groups": [dataclasses.asdict(g) for g in self._groups],
            "session": self._client.get_state(self._session, self._n),
            "control_seq": self._ctl_seq,
            "control_epoch": self._ctl_epoch,
            "grad_norms": list(self.grad_norms),
        }

    def _restore_session(self, state: Mapping[str, Any]) -> tuple[SessionInfo, list[float]]:
        """Check a rewarm_state() and open its session, changing nothing here."""
        self._check_open("loading a checkpoint")
        if not isinstance(state, Mapping):
            raise SpecError(f"rewarm state: expected a mapping, got {type(state).__name__}")
        if state.get("format") != STATE_FORMAT:
            raise SpecError(f"rewarm state format {state.get('format')!r}: this version reads {STATE_FORMAT}")
        if not isinstance(state.get("session"), (bytes, bytearray, memoryview)):
            raise SpecError(f"rewarm state session={state.get('session')!r:.80}: expected bytes")
        for key in ("control_seq", "control_epoch"):
            v = state.get(key, 0)
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 1 << 64:
                raise SpecError(f"rewarm state {key}={v!r:.80}: expected an integer in [0, 2^64)")
        norms = _norms_from_state(state.get("grad_norms", []))
        info = self._client.restore_state(bytes(state["session"]), name=self._name)
        if not _same(info.schedule, self._schedule):
            self._client.close_session(info.session_id)
            diffs = _diffs(info.schedule, self._schedule)
            raise SpecError(
                "the checkpoint's schedule differs from this optimizer's: "
                + "; ".join(f"{path}: {_short(was)} -> {_short(now)}" for path, was, now in diffs)
                + ". Wrap the optimizer with the checkpoint's schedule (state['rewarm']['schedule']) to "
                "resume it, then re-plan (for example replan('extend', total_steps=...)) to change it "
                "without a jump.",
                field=f"schedule.{diffs[0][0]}" if diffs else "schedule",
            )
        return info, norms

    def _adopt_session(self, state: Mapping[str, Any], info: SessionInfo, norms: list[float]) -> None:
        # A checkpoint from before wrap() wrote its keys into the groups, or
        # param groups loaded by other means (DCP's set_optimizer_state_dict
        # before load_rewarm_state): wrap's keys where the groups lack them.
        for g, keys in zip(self.optimizer.param_groups, self._wrap_keys):  # noqa: B905 - groups may be added
            for key, v in keys.items():
                g.setdefault(key, v)
        old, self._session = self._session, info.session_id
        # The old session is only garbage now: failing to close it (a socket
        # error) must not leave the load half-applied; the sidecar frees it later.
        with contextlib.suppress(RewarmError):
            self._client.close_session(old)
        self._n = int(info.step)
        self._ctl_seq = int(state.get("control_seq", 0))
        self._ctl_epoch = int(state.get("control_epoch", 0))
        self._polled_at = -1  # a restored position polls again, even at the step last polled
        self.grad_norms[:] = norms
        self._invalidate()
        self._last_lrs = list(self.lrs_at(self._n - 1) if self._n > 0 else self.lrs_at(0))
        if self._scheduler is not None:  # its view follows a restore through either object
            self._scheduler.sync()
        self._show(self._n)

    def load_rewarm_state(self, state: Mapping[str, Any]) -> None:
        """Restore the schedule position saved by rewarm_state(); nothing changes
        when it raises."""
        info, norms = self._restore_session(state)
        self._adopt_session(state, info, norms)

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        """The inner optimizer's state dict (``state``, ``param_groups``) plus a
        ``rewarm`` entry holding rewarm_state(). Hooks registered with
        register_state_dict_pre_hook/register_state_dict_post_hook run around it."""
        for pre_hook in self._optimizer_state_dict_pre_hooks.values():
            pre_hook(self)
        sd = {**self.optimizer.state_dict(), "rewarm": self.rewarm_state()}
        for post_hook in self._optimizer_state_dict_post_hooks.values():
            result = post_hook(self, sd)
            if result is not None:
                sd = result
        return sd

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:  # type: ignore[override]
        """Load a state_dict(): the current layout, ``{state, param_groups, rewarm}``,
        or the nested one of earlier versions, ``{optimizer, rewarm}``. Everything is
        checked before anything changes."""
        if not isinstance(state_dict, Mapping):
            raise SpecError(f"optimizer state dict: expected a mapping, got {type(state_dict).__name__}")
        sd: dict[str, Any] = dict(state_dict)
        for pre_hook in self._optimizer_load_state_dict_pre_hooks.values():
            result = pre_hook(self, sd)
            if result is not None:
                sd = result
        if "rewarm" in sd and "optimizer" in sd:
            inner_sd = sd["optimizer"]  # the layout before 'state'/'param_groups' moved to the top
        elif "rewarm" in sd and "state" in sd and "param_groups" in sd:
            inner_sd = {k: v for k, v in sd.items() if k != "rewarm"}
        else:
            raise SpecError(
                f"not a rewarm optimizer state dict (keys {sorted(map(str, sd))}; expected 'state', "
                "'param_groups' and 'rewarm'). To load a plain torch optimizer checkpoint use "
                "wrapped.optimizer.load_state_dict(...); the schedule then starts at n=0. "
                "torch.distributed.checkpoint keeps only 'state' and 'param_groups': load those with "
                "set_optimizer_state_dict(model, wrapped.optimizer, ...) and the saved "
                "wrapped.rewarm_state() with wrapped.load_rewarm_state(...)."
            )
        info, norms = self._restore_session(sd["rewarm"])
        try:
            self._check_inner_state_dict(inner_sd)
            # The loaded groups' keys (wrap's where a checkpoint lacks them),
            # checked in Go on the restored session before anything changes.
            saved = inner_sd["param_groups"]
            wrap_keys = (self._wrap_keys + [{}] * len(saved))[: len(saved)]  # none for groups added later
            loaded = [{**keys, **g} for g, keys in zip(saved, wrap_keys, strict=True)]
            specs = [_spec_from_keys(g, k) for k, g in enumerate(loaded)]
            try:
                self._client.get_values(info.session_id, int(info.step), 1, specs)
            except SpecError as e:
                raise _with_key(e) from None
            self.optimizer.load_state_dict(inner_sd)
        except BaseException:
            self._client.close_session(info.session_id)
            raise
        self._adopt_session(sd["rewarm"], info, norms)
        for post_hook in self._optimizer_load_state_dict_post_hooks.values():
            post_hook(self)

    def _check_inner_state_dict(self, sd: Any) -> None:
        """The checks torch's Optimizer.load_state_dict makes, made before anything changes."""
        saved = sd.get("param_groups") if isinstance(sd, Mapping) else None
        if not isinstance(saved, (list, tuple)) or not isinstance(sd.get("state"), Mapping):
            raise SpecError("optimizer state dict: expected 'state' (a mapping) and 'param_groups' (a list)")
        groups = self.optimizer.param_groups
        if len(saved) != len(groups):
            raise SpecError(
                f"optimizer state dict: param_groups has {len(saved)} groups, but this optimizer has "
                f"{len(groups)}"
            )
        for k, (s, g) in enumerate(zip(saved, groups)):  # noqa: B905 - lengths checked above
            if not isinstance(s, Mapping) or not isinstance(s.get("params"), Sequence):
                raise SpecError(
                    f"optimizer state dict: param_groups[{k}] = {s!r:.80}: expected a dict with 'params'"
                )
            if len(s["params"]) != len(g["params"]):
                raise SpecError(
                    f"optimizer state dict: param_groups[{k}] has {len(s['params'])} params, but this "
                    f"optimizer's group {k} has {len(g['params'])}"
                )

    @property
    def lr_scheduler(self) -> RewarmLRScheduler:
        """A torch LRScheduler view of this schedule, for HF Trainer or Lightning."""
        if self._scheduler is None:
            self._scheduler = RewarmLRScheduler(self)
        return self._scheduler

    def close(self) -> None:
        """Close the session (the optimizer keeps working on its cached values
        only, and has no state_dict() any more). Closing again does nothing."""
        if self._closed:
            return
        self._closed = True
        try:
            self._client.close_session(self._session)
        finally:
            self._client.close()

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError("a rewarm optimizer cannot be pickled; save state_dict() instead")

    def __repr__(self) -> str:
        return (
            f"RewarmOptimizer({type(self.optimizer).__name__}, kind={self._schedule.get('kind')!r}, "
            f"backend={self.backend!r}, n={self._n})"
        )


def _closure_arg(closure: Callable[[], float] | None = None) -> Callable[[], float] | None:
    """The closure among step()'s arguments, bound as step() binds them."""
    return closure


def _reshow(ref: weakref.ref[RewarmOptimizer]) -> None:
    opt = ref()
    if opt is not None and not opt._closed:
        opt._show(opt._n)


class _Said(str):
    """Text shown as is in a difference: '(absent)', '3 items'."""

    def __repr__(self) -> str:
        return str(self)


_ABSENT = _Said("(absent)")


def _same(a: Any, b: Any) -> bool:
    """Equality of spec values with NaN equal to NaN: a refined schedule's
    grad_norms keep the NaN of updates without gradients."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _diffs(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """Per top-level key that differs, the first difference inside it as
    (path, a's value, b's value): 'stages[1].steps', not both stage lists,
    and 'grad_norms[0]', not 5000 norms twice."""
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k, _ABSENT), b.get(k, _ABSENT)
        if not _same(va, vb):
            out.append(_first_diff(k, va, vb))
    return out


def _first_diff(path: str, a: Any, b: Any) -> tuple[str, Any, Any]:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        for k in sorted(set(a) | set(b), key=str):
            va, vb = a.get(k, _ABSENT), b.get(k, _ABSENT)
            if not _same(va, vb):
                return _first_diff(f"{path}.{k}", va, vb)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        for i, (va, vb) in enumerate(zip(a, b, strict=False)):  # a length difference is told after
            if not _same(va, vb):
                return _first_diff(f"{path}[{i}]", va, vb)
        if len(a) != len(b):
            return path, _Said(f"{len(a)} items"), _Said(f"{len(b)} items")
    return path, a, b


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 80 else r[:77] + "..."


class RewarmLRScheduler(LRScheduler):
    """A read-only torch LRScheduler view of a RewarmOptimizer.

    The wrapped optimizer already sets the LR inside ``step()`` (and leaves
    the next update's rate in its param groups), so this scheduler's
    ``step()`` only syncs ``last_epoch`` (= n, the updates applied) and
    ``get_last_lr()``: the rates the next update will use, as torch's
    schedulers report them (HF Trainer logs this value with the update that
    uses it). Frameworks that call ``optimizer.step();
    scheduler.step()`` therefore never double-count.
    Its state_dict carries the schedule position too, so restoring either
    object resumes the schedule.
    """

    def __init__(self, optimizer: RewarmOptimizer) -> None:
        self._rewarm = optimizer
        super().__init__(optimizer, last_epoch=-1)

    def get_lr(self) -> list[float]:  # type: ignore[override]
        return list(self._rewarm.lrs_at(self._rewarm.steps_applied))

    def step(self, epoch: int | None = None) -> None:  # type: ignore[override]
        if epoch is not None:
            raise SpecError("rewarm schedules count optimizer updates; step(epoch) is not supported")
        self._step_count = getattr(self, "_step_count", 0) + 1
        self.sync()

    def sync(self) -> None:
        """Read last_epoch and get_last_lr() from the optimizer's position."""
        self.last_epoch = self._rewarm.steps_applied
        lrs: list[float | torch.Tensor] = list(self.get_lr())
        self._last_lr = lrs

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        return {"last_epoch": self.last_epoch, "rewarm": self._rewarm.rewarm_state()}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:  # type: ignore[override]
        if not isinstance(state_dict, Mapping) or "rewarm" not in state_dict:
            got = sorted(state_dict) if isinstance(state_dict, Mapping) else type(state_dict).__name__
            raise SpecError(
                f"rewarm scheduler state: no 'rewarm' entry (got {got}); this is not a rewarm scheduler's "
                "state_dict, and a torch scheduler's state cannot set a rewarm schedule's position"
            )
        self._rewarm.load_rewarm_state(state_dict["rewarm"])
        self.step()


def wrap(
    optimizer: Optimizer,
    schedule: SpecLike,
    backend: Backend = "auto",
    multipliers: Sequence[float] | None = None,
    groups: Sequence[GroupLike] | None = None,
    window: int | None = None,
    name: str = "",
    track_grad_norm: Literal["l1", "l2"] | None = None,
) -> RewarmOptimizer:
    """Drive ``optimizer``'s learning rate with a rewarm schedule.

    schedule: a spec mapping (``{"kind": "cosine", "peak_lr": 3e-4, ...}``) or a
    path to a .yaml/.json file holding one. backend: ``"auto"`` (the sidecar at
    $REWARM_SOCKET when set, else in-process), ``"inprocess"`` or ``"socket"``.
    groups: per-param-group ``{"multiplier", "min_lr", "peak_lr", "wd_mult"}``.
    track_grad_norm: record the total gradient norm of every update in
    ``wrapped.grad_norms``, one per update counted (NaN for an update where no
    parameter had a gradient), for a ``refined`` schedule of the next run.
    """
    return RewarmOptimizer(
        optimizer,
        schedule,
        backend=backend,
        multipliers=multipliers,
        groups=groups,
        window=window,
        name=name,
        track_grad_norm=track_grad_norm,
    )
