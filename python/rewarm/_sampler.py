"""rewarm.ReplaySampler: a torch batch sampler over ConcatDataset ids whose
batches come from the Go replay planner.

Indices are produced in the main process (the batch sampler runs there), a
window of steps per call, and cross the boundary as bytes; DataLoader workers
only receive lists of ints (as from torch's BatchSampler) and never call Go.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch.utils.data import Sampler

from rewarm._client import Backend, Client, int_arg, shared_client
from rewarm._errors import SessionNotFound, SpecError
from rewarm._spec import SpecLike, load_spec

STATE_VERSION = 1
MAX_WINDOW = 1 << 20  # steps per fetch; the dispatcher caps the ids per reply anyway


def _rank_world(rank: int | None, world_size: int | None) -> tuple[int, int, dict[str, str]]:
    """Rank and world size, and for each one not passed where it came from
    (for errors: a bad RANK in the environment should be named as such)."""
    rank = None if rank is None else int_arg(rank, "rank")
    world_size = None if world_size is None else int_arg(world_size, "world_size", lo=1)
    if rank is not None and world_size is not None:
        return rank, world_size, {}
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            passed = (("rank", rank), ("world_size", world_size))
            origin = {n: "torch.distributed" for n, v in passed if v is None}
            return (
                dist.get_rank() if rank is None else rank,
                dist.get_world_size() if world_size is None else world_size,
                origin,
            )
    except ImportError:  # pragma: no cover
        pass
    origin = {}
    if rank is None:
        rank = _env_int("RANK", 0)
        origin["rank"] = "environment variable RANK" if os.environ.get("RANK") else "default"
    if world_size is None:
        world_size = _env_int("WORLD_SIZE", 1)
        origin["world_size"] = (
            "environment variable WORLD_SIZE" if os.environ.get("WORLD_SIZE") else "default"
        )
    return rank, world_size, origin


def _origin(field: str, origin: dict[str, str]) -> str:
    """' (from environment variable RANK)', or '' for a value passed in."""
    where = origin.get(field)
    return "" if where is None else " (the default)" if where == "default" else f" (from {where})"


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SpecError(
            f"environment variable {name}={raw!r}: expected an int (pass rank= / world_size= to override)",
            field=name,
        ) from None


class ReplaySampler(Sampler[list[int]]):
    """Yields, for each step, this rank's slice of the global batch as a list
    of global ids (ints, as torch's BatchSampler yields) in
    ``torch.utils.data.ConcatDataset`` order. ``batch(step)`` gives the same
    ids as an int64 tensor.

    ``spec`` holds ``sources`` ([{name, size}], in ConcatDataset order),
    ``global_batch_size``, ``seed``, ``stages`` ([{steps, mixture, replay}]) and
    optionally ``replay`` ("seen" | "all"), ``stratified`` and ``normalize``; see
    docs/replay.md. Rank and world size default to torch.distributed, then to
    the RANK / WORLD_SIZE variables torchrun sets.
    """

    def __init__(
        self,
        spec: SpecLike,
        rank: int | None = None,
        world_size: int | None = None,
        backend: Backend = "auto",
        window: int = 64,
        start_step: int = 0,
    ) -> None:
        self.spec = load_spec(spec, "replay spec")
        self.rank, self.world_size, origin = _rank_world(rank, world_size)
        window = int_arg(window, "window", lo=1)
        if window > MAX_WINDOW:
            raise SpecError(f"window={window}: must be at most {MAX_WINDOW} steps per fetch", field="window")
        start_step = int_arg(start_step, "start_step")
        self._closed = False
        self._client = shared_client(backend)
        info = self._client.open_sampler(self.spec)
        self._id = info.sampler_id
        # A sampler dropped without close() still frees its entry in the
        # (possibly shared) dispatcher.
        self._release = weakref.finalize(self, _release, self._client, self._id, os.getpid())
        self._release.atexit = False
        self.info = info
        self.spec_hash = info.spec_hash
        self.total_steps = info.total_steps
        self.global_batch_size = info.global_batch_size
        if self.world_size < 1:
            raise SpecError(
                f'replay: field "world_size" = {self.world_size}{_origin("world_size", origin)}: '
                "must be >= 1",
                code="INVALID_ARGUMENT",
                field="world_size",
            )
        if self.global_batch_size % self.world_size:
            raise SpecError(
                f'replay: field "world_size" = {self.world_size}{_origin("world_size", origin)}: '
                f"global_batch_size {self.global_batch_size} must be divisible by the world size",
                code="INVALID_ARGUMENT",
                field="world_size",
            )
        if not 0 <= self.rank < self.world_size:
            raise SpecError(
                f"rank={self.rank}{_origin('rank', origin)}: must be in [0, {self.world_size}) for "
                f"world_size={self.world_size}{_origin('world_size', origin)}",
                field="rank",
            )
        self.per_rank = self.global_batch_size // self.world_size
        self._window = window
        if not 0 <= start_step <= self.total_steps:
            raise SpecError(
                f"start_step={start_step}: must be in [0, {self.total_steps}]", field="start_step"
            )
        # Where a new pass starts, and the one-shot position that
        # load_state_dict / set_step give the next iterator only (after it,
        # passes start at _first again, as in a run that was never stopped).
        self._first = start_step
        self._resume: int | None = None
        # The next step of the live iterator (the one created last), which is
        # what state_dict() reports; `_iters` counts iterators, so an older one
        # that is still being drained cannot move it.
        self._pos = start_step
        self._iters = 0
        self._finished = False  # the live iterator ran out (not only yielded the last batch)
        # The current window: little-endian int64 ids of `_cache_count` steps
        # from `_cache_start`, `_cache_per` per step. Never handed out: each
        # batch is a copy of its row.
        self._cache = bytearray()
        self._cache_start = 0
        self._cache_count = 0
        self._cache_per = 0

    # --- random access -------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise SessionNotFound(
                "this sampler was closed (close()), which frees its state in the dispatcher: "
                "close it once its batches are read",
                code="NOT_FOUND",
            )

    def _fetch(self, step: int, count: int, rank: int, world: int) -> tuple[int, int, bytearray]:
        self._check_open()
        n, per, ids = self._client.get_batches(self._id, step, count, rank, world)
        return n, per, bytearray(ids)

    def _row(self, step: int) -> memoryview:
        """The ids of ``step`` for this rank, as a view of the window."""
        self._check_open()
        i = step - self._cache_start
        if not 0 <= i < self._cache_count:
            self._cache_count, self._cache_per, self._cache = self._fetch(
                step, self._window, self.rank, self.world_size
            )
            self._cache_start, i = step, 0
        n = 8 * self._cache_per
        return memoryview(self._cache)[n * i : n * (i + 1)]

    def batch(self, step: int) -> torch.Tensor:
        """This rank's slice of the global batch of ``step``, as an int64 tensor."""
        step = int_arg(step, "step")
        if not step < self.total_steps:
            raise IndexError(f"step {step} is outside the plan (0..{self.total_steps - 1})")
        # A bytearray of its own (one small copy), so a caller that writes to
        # the batch cannot change what a later batch(step) returns.
        with self._row(step) as row:
            return torch.frombuffer(bytearray(row), dtype=torch.int64)

    def global_batch(self, step: int) -> torch.Tensor:
        """The whole global batch of ``step`` (the same ids at every world
        size; with ``stratified`` the ranks' slices hold them in another order)."""
        step = int_arg(step, "step")
        if not step < self.total_steps:
            raise IndexError(f"step {step} is outside the plan (0..{self.total_steps - 1})")
        _, per, ids = self._fetch(step, 1, 0, 1)
        return torch.frombuffer(ids, dtype=torch.int64, count=per)

    def quotas(self, step: int) -> dict[str, int]:
        """How many samples each source gets in the global batch of ``step``."""
        step = int_arg(step, "step")
        if not step < self.total_steps:
            raise IndexError(f"step {step} is outside the plan (0..{self.total_steps - 1})")
        self._check_open()
        counts = self._client.get_quotas(self._id, step, 1)[0]
        return dict(zip(self.info.source_names, counts, strict=True))

    # --- torch Sampler -------------------------------------------------------

    def __iter__(self) -> Iterator[list[int]]:
        """A new pass from ``start_step``, whatever earlier iterators yielded or
        prefetched: like torch's samplers, every iterator starts over. The first
        iterator after ``load_state_dict`` / ``set_step`` starts at that step
        instead (once). The new iterator becomes the one ``state_dict()``
        follows."""
        self._iters += 1
        self._finished = False
        if self._resume == self.total_steps:
            # The rest of a pass whose last batch was taken: nothing. Bound
            # here, to the first iterator made after the load, because
            # StatefulDataLoader makes that one from the state and a fresh
            # one after it when it recorded the pass as finished.
            self._resume = None
            self._pos = self.total_steps
            return self._steps(self._iters, self.total_steps)
        self._pos = self._first if self._resume is None else self._resume
        return self._steps(self._iters, None)

    def _steps(self, ident: int, start: int | None) -> Iterator[list[int]]:
        # Runs at the first next(): a DataLoader with workers calls iter() twice
        # and advances only the second, which must be the one that resumes.
        step = self._first if start is None else start
        if start is None and self._iters == ident and self._resume is not None:
            step, self._resume = self._resume, None
        while step < self.total_steps:
            with self._row(step) as row, row.cast("q") as ids:
                out = ids.tolist()
            step += 1
            if self._iters == ident:
                self._pos = step
            yield out
        if self._iters == ident:
            self._finished = True

    def __len__(self) -> int:
        """The number of batches in a pass (from ``start_step``). Like torchdata's
        samplers, it does not shrink for a pass resumed midway: loops that
        count batches per epoch (Lightning) count the resumed epoch whole."""
        return max(0, self.total_steps - self._first)

    # --- checkpointing (torchdata StatefulDataLoader conventions) ------------

    def state_dict(self) -> dict[str, Any]:
        """The whole state: which spec, and the next step the live iterator
        yields (the resume position when no iterator has been created since it
        was set). It does not depend on rank or world size, so a run can resume
        at another one. Under a DataLoader with workers the live iterator runs
        ahead of the training loop; see docs/replay.md."""
        state: dict[str, Any] = {"version": STATE_VERSION, "spec_hash": self.spec_hash, "step": self._pos}
        if self._pos == self.total_steps:
            # Whether the live iterator ran out (the loop left the pass) or
            # only yielded the last batch (a checkpoint inside the loop).
            state["pass_finished"] = self._finished
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if not isinstance(state, Mapping):
            raise SpecError(f"replay sampler state: expected a mapping, got {type(state).__name__}")
        if state.get("version") != STATE_VERSION:
            raise SpecError(
                f"replay sampler state version {state.get('version')!r}: expected {STATE_VERSION}",
                field="version",
            )
        if state.get("spec_hash") != self.spec_hash:
            raise SpecError(
                f"replay sampler state is for spec {state.get('spec_hash')!r}, this sampler's spec is "
                f"{self.spec_hash!r}: resuming would read different batches; build the sampler from the "
                "checkpoint's spec. If the only change is stages appended after the checkpoint's step, "
                f"the batches up to it are the same: call set_step({state.get('step')!r}) instead",
                field="spec_hash",
            )
        if "step" not in state:
            raise SpecError("replay sampler state: no 'step'", field="step")
        step = int_arg(state["step"], "step")
        if not step <= self.total_steps:
            raise SpecError(
                f"replay sampler state step {step} is outside the plan (0..{self.total_steps})", field="step"
            )
        # A pass the loop left resumes as the next pass, from the start, like
        # an uninterrupted run; one whose last batch was taken inside the loop
        # gives its (empty) rest first; otherwise the next iterator (only)
        # continues at step. A live iterator keeps its own position but no
        # longer moves the reported step. States without pass_finished (older
        # ones) count as finished.
        finished = step == self.total_steps and bool(state.get("pass_finished", True))
        self._resume = None if finished else step
        self._pos = step
        self._finished = finished
        self._iters += 1

    def set_step(self, step: int) -> None:
        """Start the next iterator (only) at ``step``, for loops that track their
        own step; an iterator created before keeps its own position. ``step``
        equal to ``total_steps`` means the pass is over: the next iterator
        starts a new one."""
        self.load_state_dict({"version": STATE_VERSION, "spec_hash": self.spec_hash, "step": step})

    def close(self) -> None:
        """Free this sampler's state in the dispatcher (also done when the
        sampler is garbage collected). Closing twice does nothing."""
        if self._release.detach() is None:
            return
        self._closed = True
        self._cache, self._cache_count = bytearray(), 0
        try:
            self._client.close_session(self._id)
        finally:
            self._client.close()

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError(
            "ReplaySampler runs in the main process and is not pickled to DataLoader workers; pass it as "
            "batch_sampler= (not inside the dataset)"
        )


def _release(client: Client, sampler_id: int, pid: int) -> None:
    if os.getpid() != pid:  # a forked child's copy: the sampler belongs to the parent
        return
    if client.shared:
        # Others use this client, possibly in a call this collection interrupted.
        client.release_later(sampler_id)
        return
    try:  # this sampler's own connection: nothing else can be using it
        client.close_session(sampler_id)
        client.close()
    except Exception:  # best effort: this runs during garbage collection
        pass
