"""rewarm.wrap: a torch optimizer whose learning rate comes from the Go core.

The wrapper keeps one number, ``n``, the count of updates applied. Each
``step()`` sets every param group's ``lr`` to ``multiplier x f(n)`` and runs the
inner optimizer. Values are fetched from Go a window at a time, since f is a
pure function of (spec, n).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from rewarm import _transport
from rewarm._client import Backend, Client, connect
from rewarm._errors import ForkError
from rewarm._spec import SpecLike, load_spec

STATE_FORMAT = 1
# Steps fetched per round trip. A socket round trip costs tens of microseconds
# and an in-process call a few, and each Go call also disturbs the caches the
# next torch steps run in; 4096 steps amortize both to a fraction of a
# microsecond (see bench/bench_step.py).
DEFAULT_WINDOW = 4096
MAX_VALUES_PER_CALL = 1 << 16  # the dispatcher's per-request cap on count


class RewarmOptimizer(Optimizer):
    """A torch optimizer driven by a rewarm schedule. Create it with wrap().

    ``param_groups``, ``state`` and ``defaults`` are the inner optimizer's. A
    group's multiplier is ``multipliers[i]`` if given, else its ``lr_mult`` key,
    else 1.0.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        schedule: SpecLike,
        backend: Backend = "auto",
        multipliers: Sequence[float] | None = None,
        window: int | None = None,
        name: str = "",
    ) -> None:
        # Optimizer.__init__ is deliberately not called: all optimizer state
        # lives in the inner optimizer.
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"rewarm.wrap needs a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if isinstance(optimizer, RewarmOptimizer):
            raise TypeError("this optimizer is already wrapped by rewarm")
        self.optimizer = optimizer
        self._client: Client = connect(backend)
        spec = load_spec(schedule)
        info = self._client.open_session(spec, name=name)
        self._session = info.session_id
        self._schedule = info.schedule
        self._name = name
        self._n = 0
        self._fixed_mult = None if multipliers is None else [float(m) for m in multipliers]
        self._mult = self._multipliers()
        self._window = int(window or DEFAULT_WINDOW)
        if not 1 <= self._window <= MAX_VALUES_PER_CALL:
            raise ValueError(f"window={window}: must be between 1 and {MAX_VALUES_PER_CALL}")
        # rows[i] holds the per-group rates of update cache_start+i+1.
        self._rows: list[list[float]] = []
        self._cache_start = 0
        self._inprocess = self._client.kind == "inprocess"
        self._last_lrs: list[float] = self.lrs_at(0)
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

    def _multipliers(self) -> list[float]:
        groups = self.optimizer.param_groups
        if self._fixed_mult is not None:
            if len(self._fixed_mult) != len(groups):
                raise ValueError(
                    f"multipliers has {len(self._fixed_mult)} entries but the optimizer has "
                    f"{len(groups)} param groups"
                )
            return list(self._fixed_mult)
        return [float(g.get("lr_mult", 1.0)) for g in groups]

    def _invalidate(self) -> None:
        self._rows = []

    def _fill(self, n: int) -> None:
        g = len(self._mult)
        count = max(1, min(self._window, MAX_VALUES_PER_CALL // max(1, g)))
        values = self._client.get_lr(self._session, n, count, self._mult)
        self._rows = [values[i : i + g] for i in range(0, len(values), g)]
        self._cache_start = n

    def lrs_at(self, n: int) -> list[float]:
        """The per-group learning rates that update n+1 uses."""
        if len(self._mult) != len(self.optimizer.param_groups):
            self._mult = self._multipliers()
            self._invalidate()
        i = n - self._cache_start
        if not 0 <= i < len(self._rows):
            if self._inprocess and _transport.in_forked_child():
                raise ForkError(
                    f"rewarm: this optimizer's in-process backend was loaded by a parent of process "
                    f"{os.getpid()}; {_transport.FORK_HELP}",
                    code="FORKED",
                )
            self._fill(n)
            i = 0
        return self._rows[i]

    def get_last_lr(self) -> list[float]:
        """The learning rates the most recent update used (f(0) before any)."""
        return list(self._last_lrs)

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
        """Set each group's lr for update n+1, run the inner step, count it."""
        inner = self.optimizer
        groups = inner.param_groups
        i = self._n - self._cache_start
        rows = self._rows
        # Hot path: the rates are already fetched and the groups unchanged.
        lrs = rows[i] if 0 <= i < len(rows) and len(groups) == len(self._mult) else self.lrs_at(self._n)
        for group, lr in zip(groups, lrs):  # noqa: B905 - lengths checked above
            group["lr"] = lr
        loss = inner.step() if closure is None else inner.step(closure)
        self._last_lrs = lrs
        self._n += 1
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        self.optimizer.add_param_group(param_group)
        self._mult = self._multipliers()
        self._invalidate()

    def register_step_pre_hook(self, hook: Callable[..., Any]) -> Any:
        return self.optimizer.register_step_pre_hook(hook)

    def register_step_post_hook(self, hook: Callable[..., Any]) -> Any:
        return self.optimizer.register_step_post_hook(hook)

    def rewarm_state(self) -> dict[str, Any]:
        """The schedule part of state_dict(): spec, n and the Go session snapshot."""
        return {
            "format": STATE_FORMAT,
            "schedule": self.schedule,
            "step": self._n,
            "multipliers": list(self._mult),
            "session": self._client.get_state(self._session, self._n),
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
                + ". Wrap the optimizer with the checkpoint's schedule (state['rewarm']['schedule']) "
                "to resume it."
            )
        old, self._session = self._session, info.session_id
        self._client.close_session(old)
        self._n = int(info.step)
        self._invalidate()
        self._last_lrs = self.lrs_at(self._n - 1) if self._n > 0 else self.lrs_at(0)

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
    scheduler's ``step()`` only syncs ``last_epoch`` (= n) and ``get_last_lr()``
    (the rates the latest update used). Frameworks that call
    ``optimizer.step(); scheduler.step()`` therefore never double-count.
    Its state_dict carries the schedule position too, so restoring either
    object resumes the schedule.
    """

    def __init__(self, optimizer: RewarmOptimizer) -> None:
        self._rewarm = optimizer
        super().__init__(optimizer, last_epoch=-1)

    def get_lr(self) -> list[float]:  # type: ignore[override]
        return self._rewarm.get_last_lr()

    def step(self, epoch: int | None = None) -> None:  # type: ignore[override]
        if epoch is not None:
            raise ValueError("rewarm schedules count optimizer updates; step(epoch) is not supported")
        self._step_count = getattr(self, "_step_count", 0) + 1
        self.last_epoch = self._rewarm.steps_applied
        self._last_lr = self._rewarm.get_last_lr()

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
    window: int | None = None,
    name: str = "",
) -> RewarmOptimizer:
    """Drive ``optimizer``'s learning rate with a rewarm schedule.

    schedule: a spec mapping (``{"kind": "cosine", "peak_lr": 3e-4, ...}``) or a
    path to a .yaml/.json file holding one. backend: ``"auto"`` (the sidecar at
    $REWARM_SOCKET when set, else in-process), ``"inprocess"`` or ``"socket"``.
    """
    return RewarmOptimizer(
        optimizer, schedule, backend=backend, multipliers=multipliers, window=window, name=name
    )
