"""rewarm.wrap: a torch optimizer whose learning rate comes from the Go core.

The wrapper keeps one number, ``n``, the count of updates applied. Each
``step()`` sets every param group's ``lr`` (and, when the schedule sets them,
``momentum``/``betas[0]`` and ``weight_decay``) to the values of update n+1 and
runs the inner optimizer. Values are fetched from Go a window at a time: they
are a pure function of (spec, re-plans, reports, n), and any re-plan or report
made through this object drops the window.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from rewarm import _transport
from rewarm._client import Backend, Client, GroupSpec, SessionInfo, connect
from rewarm._errors import ForkError
from rewarm._spec import SpecLike, load_spec

STATE_FORMAT = 1
# Steps fetched per round trip. A socket round trip costs tens of microseconds
# and an in-process call a few, and each Go call also disturbs the caches the
# next torch steps run in; 4096 steps amortize both to a fraction of a
# microsecond (see bench/bench_step.py).
DEFAULT_WINDOW = 4096
MAX_VALUES_PER_CALL = 1 << 16  # the dispatcher's per-request cap on count

GroupLike = GroupSpec | Mapping[str, float]


def _group_spec(g: GroupLike) -> GroupSpec:
    if isinstance(g, GroupSpec):
        return g
    unknown = set(g) - {"multiplier", "min_lr", "peak_lr", "wd_mult"}
    if unknown:
        raise ValueError(f"groups: unknown keys {sorted(unknown)} (use multiplier, min_lr, peak_lr, wd_mult)")
    return GroupSpec(**{k: float(v) for k, v in g.items()})


class RewarmOptimizer(Optimizer):
    """A torch optimizer driven by a rewarm schedule. Create it with wrap().

    ``param_groups``, ``state`` and ``defaults`` are the inner optimizer's. A
    group's settings come from ``groups[i]`` if given, else from its param-group
    keys: ``lr_mult`` (multiplier, default 1), ``wd_mult`` (weight-decay
    multiplier, default 1), and ``rewarm_min_lr`` / ``rewarm_peak_lr``
    (absolute range the schedule is remapped to).
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
        # lives in the inner optimizer.
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"rewarm.wrap needs a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if isinstance(optimizer, RewarmOptimizer):
            raise TypeError("this optimizer is already wrapped by rewarm")
        if multipliers is not None and groups is not None:
            raise ValueError("give multipliers or groups, not both")
        if track_grad_norm not in (None, "l1", "l2"):
            raise ValueError(f"track_grad_norm={track_grad_norm!r}: expected None, 'l1' or 'l2'")
        self.optimizer = optimizer
        self._client: Client = connect(backend)
        info = self._client.open_session(load_spec(schedule), name=name)
        self._session = info.session_id
        self._schedule = info.schedule
        self._name = name
        self._n = 0
        self._fixed: list[GroupSpec] | None = None
        if multipliers is not None:
            self._fixed = [GroupSpec(multiplier=float(m)) for m in multipliers]
        elif groups is not None:
            self._fixed = [_group_spec(g) for g in groups]
        self._groups = self._group_specs()
        self._window = int(window or DEFAULT_WINDOW)
        if not 1 <= self._window <= MAX_VALUES_PER_CALL:
            raise ValueError(f"window={window}: must be between 1 and {MAX_VALUES_PER_CALL}")
        # rows[i] holds the per-group rates of update cache_start+i+1; momentum
        # and weight decay are None unless the schedule sets them.
        self._rows: list[list[float]] = []
        self._momentum: list[float] | None = None
        self._wd_rows: list[list[float]] | None = None
        self._cache_start = 0
        self._inprocess = self._client.kind == "inprocess"
        self._norm_ord = {"l1": 1.0, "l2": 2.0}.get(track_grad_norm or "")
        self.grad_norms: list[float] = []
        self._ctl_seq = 0  # the newest `rewarm ctl` control seen
        self._polled_at = -1
        self._last_lrs: list[float] = list(self.lrs_at(0))
        self._check_momentum()
        self._scheduler: RewarmLRScheduler | None = None

    # --- the schedule --------------------------------------------------------

    @property
    def schedule(self) -> dict[str, Any]:
        """The validated spec, with every default filled in."""
        return dict(self._schedule)

    @property
    def backend(self) -> str:
        return self._client.kind

    @property
    def steps_applied(self) -> int:
        """n: the number of optimizer updates applied so far."""
        return self._n

    def _group_specs(self) -> list[GroupSpec]:
        pgs = self.optimizer.param_groups
        if self._fixed is not None:
            if len(self._fixed) != len(pgs):
                raise ValueError(
                    f"multipliers/groups has {len(self._fixed)} entries but the optimizer has "
                    f"{len(pgs)} param groups"
                )
            return list(self._fixed)
        out = []
        for g in pgs:
            lo, hi = g.get("rewarm_min_lr"), g.get("rewarm_peak_lr")
            out.append(
                GroupSpec(
                    multiplier=float(g.get("lr_mult", 1.0)),
                    min_lr=None if lo is None else float(lo),
                    peak_lr=None if hi is None else float(hi),
                    wd_mult=float(g.get("wd_mult", 1.0)),
                )
            )
        return out

    def _invalidate(self) -> None:
        self._rows = []

    def _fill(self, n: int) -> None:
        if self._inprocess and _transport.in_forked_child():
            raise ForkError(
                f"rewarm: this optimizer's in-process backend was loaded by a parent of process "
                f"{os.getpid()}; {_transport.FORK_HELP}",
                code="FORKED",
            )
        g = len(self._groups)
        count = max(1, min(self._window, MAX_VALUES_PER_CALL // max(1, g)))
        v = self._client.get_values(self._session, n, count, self._groups)
        self._rows = [v.lr[i : i + g] for i in range(0, len(v.lr), g)]
        self._momentum = v.momentum or None
        self._wd_rows = [v.weight_decay[i : i + g] for i in range(0, len(v.weight_decay), g)] or None
        self._cache_start = n

    def _index(self, n: int) -> int:
        if len(self._groups) != len(self.optimizer.param_groups):
            self._groups = self._group_specs()
            self._invalidate()
        i = n - self._cache_start
        if not 0 <= i < len(self._rows):
            self._fill(n)
            i = 0
        return i

    def lrs_at(self, n: int) -> list[float]:
        """The per-group learning rates that update n+1 uses."""
        i = self._index(n)  # may refill the rows
        return self._rows[i]

    def momentum_at(self, n: int) -> float | None:
        """The momentum (or beta1) of update n+1, or None when not scheduled."""
        i = self._index(n)
        return None if self._momentum is None else self._momentum[i]

    def weight_decay_at(self, n: int) -> list[float] | None:
        """The per-group weight decay of update n+1, or None when not scheduled."""
        i = self._index(n)
        return None if self._wd_rows is None else self._wd_rows[i]

    def _check_momentum(self) -> None:
        if self._momentum is None:
            return
        for k, g in enumerate(self.optimizer.param_groups):
            if "betas" not in g and "momentum" not in g:
                raise ValueError(
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
        at = self._n if at_step is None else int(at_step)
        if at < self._n:
            raise ValueError(
                f"at_step={at}: {self._n} updates were already applied; re-plans cannot rewrite them"
            )
        if op == "new_stage" and "schedule" in args:
            args["schedule"] = load_spec(args["schedule"])
        info = self._client.replan(self._session, at, op, **args)
        self._invalidate()
        return info

    def broadcast_replans(
        self, replans: Sequence[Mapping[str, Any]] | None = None, src: int = 0
    ) -> list[dict]:
        """Collective: every rank calls it at the same step; rank ``src``'s list of
        re-plans (dicts with ``op`` and its arguments, ``at_step`` optional) is
        broadcast with torch.distributed and applied on every rank, so all ranks
        switch at the same update. Returns the re-plans applied."""
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
            self.replan(op, **r)
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
                    found = self._client.poll_control(self._ctl_seq, self._session, self._n)
                except Exception as exc:  # the job must not stop for a control channel
                    warnings.warn(f"rewarm: polling for controls failed: {exc}", stacklevel=2)
                    found = []
                for c in found:
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
        elif is_src:
            pending = []
        return self.broadcast_replans(pending, src=src)

    def report(self, metric: float) -> None:
        """Report a metric observed after the updates applied so far (for
        plateau schedules)."""
        self._client.report(self._session, self._n, float(metric))
        self._invalidate()

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
        """Set each group's values for update n+1, run the inner step, count it."""
        inner = self.optimizer
        groups = inner.param_groups
        i = self._n - self._cache_start
        rows = self._rows
        # Hot path: the rates are already fetched and the groups unchanged.
        if not (0 <= i < len(rows) and len(groups) == len(self._groups)):
            i = self._index(self._n)
            rows = self._rows
        lrs = rows[i]
        for group, lr in zip(groups, lrs):  # noqa: B905 - lengths checked above
            group["lr"] = lr
        if self._momentum is not None or self._wd_rows is not None:
            self._apply_extras(groups, i)
        loss = inner.step() if closure is None else inner.step(closure)
        if self._norm_ord is not None:
            self._record_grad_norm()
        self._last_lrs = lrs
        self._n += 1
        return loss

    def _apply_extras(self, groups: list[dict[str, Any]], i: int) -> None:
        if self._momentum is not None:
            m = self._momentum[i]
            for g in groups:
                if "betas" in g:
                    g["betas"] = (m, *g["betas"][1:])
                else:
                    g["momentum"] = m
        if self._wd_rows is not None:
            for g, wd in zip(groups, self._wd_rows[i]):  # noqa: B905
                g["weight_decay"] = wd

    def _record_grad_norm(self) -> None:
        grads = [p.grad for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        if not grads:
            return
        assert self._norm_ord is not None
        per = torch._foreach_norm(grads, self._norm_ord)
        self.grad_norms.append(float(torch.linalg.vector_norm(torch.stack(per), self._norm_ord)))

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        self.optimizer.add_param_group(param_group)
        self._groups = self._group_specs()
        self._invalidate()

    def register_step_pre_hook(self, hook: Callable[..., Any]) -> Any:
        return self.optimizer.register_step_pre_hook(hook)

    def register_step_post_hook(self, hook: Callable[..., Any]) -> Any:
        return self.optimizer.register_step_post_hook(hook)

    def rewarm_state(self) -> dict[str, Any]:
        """The schedule part of state_dict(): spec, n and the Go session
        snapshot (which also holds the re-plans and reports)."""
        return {
            "format": STATE_FORMAT,
            "schedule": self.schedule,
            "step": self._n,
            "groups": [vars(g) for g in self._groups],
            "session": self._client.get_state(self._session, self._n),
            "control_seq": self._ctl_seq,
        }

    def load_rewarm_state(self, state: Mapping[str, Any]) -> None:
        """Restore the schedule position saved by rewarm_state()."""
        if state.get("format") != STATE_FORMAT:
            raise ValueError(
                f"rewarm state format {state.get('format')!r}: this version reads {STATE_FORMAT}"
            )
        info = self._client.restore_state(bytes(state["session"]), name=self._name)
        if info.schedule != self._schedule:
            self._client.close_session(info.session_id)
            raise ValueError(
                "the checkpoint's schedule differs from this optimizer's: "
                + _diff(info.schedule, self._schedule)
                + ". Wrap the optimizer with the checkpoint's schedule (state['rewarm']['schedule']) to "
                "resume it, then re-plan (for example replan('extend', total_steps=...)) to change it "
                "without a jump."
            )
        old, self._session = self._session, info.session_id
        self._client.close_session(old)
        self._n = int(info.step)
        self._ctl_seq = int(state.get("control_seq", 0))
        self._invalidate()
        self._last_lrs = list(self.lrs_at(self._n - 1) if self._n > 0 else self.lrs_at(0))

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        """The inner optimizer's state dict plus a ``rewarm`` entry."""
        return {"optimizer": self.optimizer.state_dict(), "rewarm": self.rewarm_state()}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:  # type: ignore[override]
        if "rewarm" not in state_dict or "optimizer" not in state_dict:
            raise ValueError(
                "not a rewarm optimizer state dict (no 'rewarm'/'optimizer' keys). To load a plain torch "
                "optimizer checkpoint use wrapped.optimizer.load_state_dict(...); the schedule then "
                "starts at n=0."
            )
        self.load_rewarm_state(state_dict["rewarm"])
        self.optimizer.load_state_dict(state_dict["optimizer"])

    @property
    def lr_scheduler(self) -> RewarmLRScheduler:
        """A torch LRScheduler view of this schedule, for HF Trainer or Lightning."""
        if self._scheduler is None:
            self._scheduler = RewarmLRScheduler(self)
        return self._scheduler

    def close(self) -> None:
        """Close the session (the optimizer keeps working on its cached values only)."""
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


def _diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
    keys = sorted(set(a) | set(b))
    parts = [
        f"{k}: {a.get(k, '(absent)')!r} -> {b.get(k, '(absent)')!r}" for k in keys if a.get(k) != b.get(k)
    ]
    return "; ".join(parts)


class RewarmLRScheduler(LRScheduler):
    """A read-only torch LRScheduler view of a RewarmOptimizer.

    The wrapped optimizer already sets the LR inside ``step()``, so this
    scheduler's ``step()`` only syncs ``last_epoch`` (= n, the updates
    applied) and ``get_last_lr()``: the rates the next update will use, as
    torch's schedulers report them (HF Trainer logs this value with the
    update that uses it). Frameworks that call ``optimizer.step();
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
            raise ValueError("rewarm schedules count optimizer updates; step(epoch) is not supported")
        self._step_count = getattr(self, "_step_count", 0) + 1
        self.last_epoch = self._rewarm.steps_applied
        self._last_lr = self.get_lr()

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        return {"last_epoch": self.last_epoch, "rewarm": self._rewarm.rewarm_state()}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:  # type: ignore[override]
        if "rewarm" in state_dict:
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
    ``wrapped.grad_norms`` (for a ``refined`` schedule of the next run).
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
