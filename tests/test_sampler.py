"""rewarm.ReplaySampler through both backends and a real DataLoader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import ConcatDataset, DataLoader, TensorDataset

import rewarm

SPEC = {
    "sources": [{"name": "pile", "size": 400}, {"name": "slimpajama", "size": 3000}],
    "global_batch_size": 12,
    "seed": 4,
    "stages": [
        {"name": "pretrain", "steps": 20, "mixture": {"pile": 1.0}},
        {"name": "cpt", "steps": 40, "mixture": {"slimpajama": 0.75, "pile": 0.25}},
    ],
}


def test_backends_agree_and_ranks_partition_the_global_batch(
    sidecar: rewarm.Sidecar, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REWARM_SOCKET", sidecar.path)
    a = rewarm.ReplaySampler(SPEC, rank=0, world_size=1, backend="inprocess")
    b = rewarm.ReplaySampler(SPEC, rank=0, world_size=1, backend="socket")
    assert a.spec_hash == b.spec_hash
    for step in range(a.total_steps):
        g = a.global_batch(step)
        assert torch.equal(g, b.global_batch(step))
        parts = [
            rewarm.ReplaySampler(SPEC, rank=r, world_size=3, backend="inprocess").batch(step)
            for r in (0, 1, 2)
        ]
        assert torch.equal(torch.cat(parts), g)


def test_iteration_state_and_resume() -> None:
    s = rewarm.ReplaySampler(SPEC, rank=1, world_size=2)
    assert len(s) == 60
    it = iter(s)
    first = [next(it) for _ in range(23)]
    state = s.state_dict()
    assert state["step"] == 23 and state["spec_hash"] == s.spec_hash
    rest = list(it)
    t = rewarm.ReplaySampler(SPEC, rank=1, world_size=2)
    t.load_state_dict(state)
    resumed = list(t)
    assert len(first) + len(rest) == 60
    assert rest == resumed
    other = rewarm.ReplaySampler({**SPEC, "seed": 5})
    with pytest.raises(ValueError, match="spec"):
        other.load_state_dict(state)


def test_a_renamed_stage_resumes_and_an_appended_one_points_to_set_step() -> None:
    s = rewarm.ReplaySampler(SPEC, rank=0, world_size=2)
    it = iter(s)
    for _ in range(23):
        next(it)
    state = s.state_dict()
    rest = list(it)
    renamed = {**SPEC, "stages": [{**st, "name": f"stage {i}"} for i, st in enumerate(SPEC["stages"])]}
    t = rewarm.ReplaySampler(renamed, rank=0, world_size=2)
    t.load_state_dict(state)
    assert list(t) == rest
    more = {**SPEC, "stages": [*SPEC["stages"], {"steps": 5, "mixture": {"pile": 1.0}}]}
    u = rewarm.ReplaySampler(more, rank=0, world_size=2)
    with pytest.raises(rewarm.SpecError, match=r"set_step\(23\) instead") as refused:
        u.load_state_dict(state)
    assert refused.value.field == "spec_hash"
    u.set_step(23)
    assert list(u)[: len(rest)] == rest


def test_quotas_and_seen_replay() -> None:
    s = rewarm.ReplaySampler(SPEC, rank=0, world_size=1)
    assert s.quotas(5) == {"pile": 12, "slimpajama": 0}
    assert s.quotas(30) == {"pile": 3, "slimpajama": 9}
    # Past the plan, every per-step query says so the same way.
    for query in (s.quotas, s.batch, s.global_batch):
        last = s.total_steps - 1
        with pytest.raises(IndexError, match=rf"step {last + 1} is outside the plan \(0..{last}\)"):
            query(s.total_steps)
    seen = {int(i) for step in range(20) for i in s.global_batch(step)}
    replayed = {int(i) for step in range(20, 60) for i in s.global_batch(step) if i < 400}
    assert replayed and replayed <= seen


def test_dataloader_with_concat_dataset_and_workers() -> None:
    ds = ConcatDataset([TensorDataset(torch.arange(400)), TensorDataset(torch.arange(10_000, 13_000))])
    s = rewarm.ReplaySampler(SPEC, rank=0, world_size=2)
    loader = DataLoader(ds, batch_sampler=s, num_workers=2)
    got = [b[0] for b in loader]
    assert len(got) == 60
    ref = rewarm.ReplaySampler(SPEC, rank=0, world_size=2)
    for step, b in enumerate(got):
        ids = ref.batch(step)
        want = torch.where(ids < 400, ids, ids - 400 + 10_000)
        assert torch.equal(b, want)


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda s: s["sources"].__setitem__(0, {"name": "pile", "size": 0}), "sources[0].size"),
        (lambda s: s["stages"][1]["mixture"].__setitem__("pile", -0.25), "stages[1].mixture.pile"),
        (lambda s: s["stages"][1]["mixture"].__setitem__("pile", float("nan")), "stages[1].mixture.pile"),
        (lambda s: s["stages"][1]["mixture"].__setitem__("pile", 0.5), "stages[1].mixture"),
        (
            lambda s: s["stages"][0].__setitem__("replay", {"slimpajama": "seen"}),
            "stages[0].replay.slimpajama",
        ),
    ],
)
def test_bad_specs(edit, field: str) -> None:
    import copy

    spec = copy.deepcopy(SPEC)
    if field == "stages[0].replay.slimpajama":
        spec["stages"][0]["mixture"] = {"pile": 0.5, "slimpajama": 0.5}
    edit(spec)
    with pytest.raises(rewarm.SpecError) as ei:
        rewarm.ReplaySampler(spec)
    assert ei.value.field == field


def test_world_size_must_divide_the_batch() -> None:
    with pytest.raises(rewarm.SpecError) as ei:
        rewarm.ReplaySampler(SPEC, rank=0, world_size=5)
    assert ei.value.field == "world_size"


@pytest.mark.parametrize("window", [1, 7, 64])
def test_window_rows_match_random_access(window: int) -> None:
    # Every step's batch, read through windows of different sizes (and so
    # different row offsets into one fetched buffer), equals the slice of the
    # global batch this rank owns.
    s = rewarm.ReplaySampler(SPEC, rank=2, world_size=3, window=window)
    got = list(s)
    assert len(got) == 60
    for step, b in enumerate(got):
        # Plain ints, as torch's BatchSampler yields: datasets index dicts and
        # seed RNGs with them.
        assert type(b) is list and len(b) == 4 and all(type(i) is int for i in b)
        assert b == s.global_batch(step)[8:12].tolist()
        assert b == s.batch(step).tolist() and s.batch(step).dtype == torch.int64


def test_spec_as_json_and_as_struct_open_the_same_sampler() -> None:
    from rewarm._proto import rewarm_pb2 as pb

    client = rewarm.connect("inprocess")
    via_json = client.open_sampler(SPEC)
    req = pb.Request(open_sampler=pb.OpenSampler())
    req.open_sampler.spec.update(SPEC)
    via_struct = client.call(req).sampler
    assert via_json.spec_hash == via_struct.spec_hash
    for step in (0, 19, 20, 59):
        a = client.get_batches(via_json.sampler_id, step, 1)
        b = client.get_batches(via_struct.sampler_id, step, 1)
        assert a == b
    client.close()


def test_a_dropped_sampler_frees_its_dispatcher_entry() -> None:
    import gc

    from rewarm._client import shared_client

    s = rewarm.ReplaySampler(SPEC, backend="inprocess")
    sid = s._id
    client = shared_client("inprocess")
    assert client.shared and s._client is client
    assert sid in [x.sampler_id for x in client.status().samplers]
    del s
    gc.collect()
    # The finalizer only queues the id (it may run inside another call on
    # this client); the next request closes it first.
    assert sid in client._orphans
    assert sid not in [x.sampler_id for x in client.status().samplers]
    assert client._orphans == []
    t = rewarm.ReplaySampler(SPEC, backend="inprocess")
    t.close()
    assert t._id not in [x.sampler_id for x in client.status().samplers]


def test_sampler_continues_in_process_when_the_sidecar_dies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The failover transport must be able to reopen the sampler from the spec
    # in whichever form it was sent (JSON or Struct) and continue the stream.
    ref = rewarm.ReplaySampler(SPEC, rank=1, world_size=2, backend="inprocess")
    sidecar = rewarm.Sidecar(str(tmp_path / "s.sock"))
    monkeypatch.setenv("REWARM_SOCKET", sidecar.path)
    try:
        s = rewarm.ReplaySampler(SPEC, rank=1, world_size=2, backend="socket", window=4)
        it = iter(s)
        before = [next(it) for _ in range(10)]
    finally:
        sidecar.proc.kill()
        sidecar.proc.wait()
    after = list(it)
    got = before + after
    assert len(got) == ref.total_steps
    assert all(g == ref.batch(step).tolist() for step, g in enumerate(got))
    assert s._client.transport.failovers >= 1


def _rank_slice(ref: rewarm.ReplaySampler, step: int, rank: int, world: int) -> torch.Tensor:
    # The rank's part of the whole global batch, through another call
    # (global_batch: one step, no rank): a partition check, not an
    # independent reference.
    g = ref.global_batch(step)
    per = len(g) // world
    return g[rank * per : (rank + 1) * per]


@pytest.mark.parametrize("workers", [0, 2])
def test_every_new_iterator_starts_at_the_resume_position(workers: int) -> None:
    # Dataset item = its own global id, so a batch tells which step it is.
    ds = TensorDataset(torch.arange(3400))
    s = rewarm.ReplaySampler(SPEC, rank=1, world_size=2, window=7)
    ref = rewarm.ReplaySampler(SPEC, rank=0, world_size=1)
    loader = DataLoader(ds, batch_sampler=s, num_workers=workers)

    def want(steps: range) -> list[torch.Tensor]:
        return [_rank_slice(ref, step, 1, 2) for step in steps]

    def same(got: list[torch.Tensor], steps: range) -> bool:
        return len(got) == len(steps) and all(
            torch.equal(g, w) for g, w in zip(got, want(steps), strict=True)
        )

    # A peek (whose iterator prefetches and is dropped), then a loop: the loop
    # is a new pass from step 0, not from where the prefetching stopped.
    peek = next(iter(loader))[0]
    assert torch.equal(peek, want(range(1))[0])
    assert same([b[0] for b in loader], range(60))
    assert s.state_dict()["step"] == 60
    # Exhausting a pass does not move the next one either.
    assert len(loader) == 60
    assert same([b[0] for b in loader], range(60))
    # After load_state_dict the next pass (only) continues at the loaded step:
    # the passes are those of a run that was never stopped.
    s.load_state_dict({**s.state_dict(), "step": 37})
    assert len(loader) == 60 and s.state_dict()["step"] == 37
    it = iter(loader)
    first = [next(it)[0] for _ in range(3)]
    assert same(first, range(37, 40))
    if workers == 0:  # no prefetching: the state is the loop's position
        assert s.state_dict()["step"] == 40
    assert same(first + [b[0] for b in it], range(37, 60))
    assert len(loader) == 60
    assert same([b[0] for b in loader], range(60))
    # A state saved at the end of a pass resumes as the next pass, from 0.
    s.load_state_dict({**s.state_dict(), "step": 60})
    assert same([b[0] for b in loader], range(60))
    s.set_step(50)
    assert same([b[0] for b in loader], range(50, 60))
    assert same([b[0] for b in loader], range(60))


def test_state_follows_the_newest_iterator() -> None:
    s = rewarm.ReplaySampler(SPEC, rank=0, world_size=3)
    old = iter(s)
    for _ in range(10):
        next(old)
    assert s.state_dict()["step"] == 10
    new = iter(s)
    assert s.state_dict()["step"] == 0  # set when the iterator is created
    next(new)
    # The old iterator still yields its own steps but no longer moves the state.
    assert next(old) == _rank_slice(s, 10, 0, 3).tolist()
    assert s.state_dict()["step"] == 1
    # A state taken mid-pass resumes a fresh sampler at the same step.
    t = rewarm.ReplaySampler(SPEC, rank=0, world_size=3)
    t.load_state_dict(s.state_dict())
    assert next(iter(t)) == _rank_slice(s, 1, 0, 3).tolist()
    # load_state_dict detaches the live iterator from the state as well.
    s.set_step(30)
    next(new)
    assert s.state_dict()["step"] == 30
    assert next(iter(s)) == _rank_slice(s, 30, 0, 3).tolist()
    assert rewarm.ReplaySampler(SPEC, start_step=12).state_dict()["step"] == 12
    with pytest.raises(ValueError, match="start_step=61"):
        rewarm.ReplaySampler(SPEC, start_step=61)
    with pytest.raises(ValueError, match="outside the plan"):
        s.set_step(61)


@pytest.mark.parametrize("window", [1, 64])
def test_writing_into_a_batch_does_not_change_the_plan(window: int) -> None:
    s = rewarm.ReplaySampler(SPEC, rank=0, world_size=2, window=window)
    b = s.batch(3)
    b.add_(1000)
    fresh = rewarm.ReplaySampler(SPEC, rank=0, world_size=2).batch(3)
    assert not torch.equal(b, fresh)
    assert torch.equal(s.batch(3), fresh)
    assert torch.equal(fresh, _rank_slice(s, 3, 0, 2))
    # The same through an iterator: the window a batch came from stays intact.
    it = iter(s)
    for step in range(5):
        x = next(it)
        x[:] = [0] * len(x)
        assert torch.equal(s.batch(step), _rank_slice(s, step, 0, 2))
    g = s.global_batch(4)
    g.fill_(-1)
    assert torch.equal(s.batch(4), _rank_slice(s, 4, 0, 2))


@pytest.mark.parametrize("workers", [0, 2])
def test_stateful_dataloader_resumes_at_the_next_untrained_step(workers: int) -> None:
    # torchdata is a test dependency (noxfile), not a dependency of rewarm:
    # imported, not skipped, so a broken install fails.
    import torchdata.stateful_dataloader as sdl

    ds = TensorDataset(torch.arange(3400))
    ref = rewarm.ReplaySampler(SPEC, rank=0, world_size=1)

    def loader() -> Any:
        s = rewarm.ReplaySampler(SPEC, rank=1, world_size=3, window=5)
        return sdl.StatefulDataLoader(ds, batch_sampler=s, num_workers=workers)

    first = loader()
    it = iter(first)
    for _ in range(7):
        next(it)
    state = first.state_dict()
    resumed = loader()
    resumed.load_state_dict(state)
    got = [b[0] for b in resumed]
    assert len(got) == 53
    assert all(torch.equal(g, _rank_slice(ref, 7 + k, 1, 3)) for k, g in enumerate(got))
    # The next epoch is a whole pass, as in a run that never stopped; so is the
    # one after a state saved at the end of an epoch.
    again = [b[0] for b in resumed]
    assert len(again) == 60 and all(torch.equal(g, _rank_slice(ref, k, 1, 3)) for k, g in enumerate(again))
    ended = loader()
    ended.load_state_dict(resumed.state_dict())
    assert len([b for b in ended]) == 60


@pytest.mark.parametrize("workers", [0, 2])
def test_a_state_saved_on_the_last_batch_resumes_with_the_rest_of_that_pass(workers: int) -> None:
    # A checkpoint taken inside the loop on the pass's last batch: the resumed
    # loader ends that pass (nothing left), then runs whole passes, as torch's
    # own samplers do under StatefulDataLoader; no pass is trained twice.
    import torchdata.stateful_dataloader as sdl

    ds = TensorDataset(torch.arange(3400))

    def loader() -> Any:
        s = rewarm.ReplaySampler(SPEC, rank=0, world_size=2, window=7)
        return sdl.StatefulDataLoader(ds, batch_sampler=s, num_workers=workers)

    first = loader()
    for k, _ in enumerate(first):
        if k == 59:
            state = first.state_dict()  # inside the loop, at the last batch
    resumed = loader()
    resumed.load_state_dict(state)
    assert [b for b in resumed] == []
    assert len([b for b in resumed]) == 60
    # A bare sampler follows the same rule; after the loop has left the pass,
    # the state resumes as the next pass.
    s = rewarm.ReplaySampler(SPEC)
    it = iter(s)
    for _ in range(60):
        next(it)
    inside = s.state_dict()
    assert inside == {**inside, "step": 60, "pass_finished": False}
    assert list(it) == []
    after = s.state_dict()
    assert after["pass_finished"] is True
    t = rewarm.ReplaySampler(SPEC)
    t.load_state_dict(inside)
    assert list(t) == [] and len(list(t)) == 60
    t.load_state_dict(after)
    assert len(list(t)) == 60
    # States written before pass_finished existed resume as the next pass.
    t.load_state_dict({k: v for k, v in after.items() if k != "pass_finished"})
    assert len(list(t)) == 60


def test_sampler_arguments_and_environment_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    s = rewarm.ReplaySampler(SPEC, rank=0, world_size=1)
    for bad in (1.5, True, "3", -1):
        with pytest.raises((TypeError, ValueError), match='"step"'):
            s.global_batch(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"window=4294967296: must be at most 1048576"):
        rewarm.ReplaySampler(SPEC, window=2**32)
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="environment variable WORLD_SIZE='two': expected an int"):
        rewarm.ReplaySampler(SPEC)
    # A rank or world size taken from the environment is named as such.
    monkeypatch.setenv("RANK", "5")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(
        ValueError,
        match=r"rank=5 \(from environment variable RANK\): must be in \[0, 2\) for world_size=2 "
        r"\(from environment variable WORLD_SIZE\)",
    ):
        rewarm.ReplaySampler(SPEC)
    with pytest.raises(ValueError, match=r"^rank=5: must be in \[0, 2\) for world_size=2 \(from environment"):
        rewarm.ReplaySampler(SPEC, rank=5)
    monkeypatch.setenv("WORLD_SIZE", "5")
    with pytest.raises(rewarm.SpecError, match=r'"world_size" = 5 \(from environment variable WORLD_SIZE\)'):
        rewarm.ReplaySampler(SPEC, rank=0)
    monkeypatch.delenv("WORLD_SIZE")
    with pytest.raises(ValueError, match=r"world_size=1 \(the default\)"):
        rewarm.ReplaySampler(SPEC)
    monkeypatch.delenv("RANK")
    with pytest.raises(TypeError, match="replay spec must be a mapping"):
        rewarm.ReplaySampler(["x"])  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match="replay spec file not found"):
        rewarm.ReplaySampler("/nonexistent/replay.yaml")
    s.close()
    s.close()  # a second close does nothing


def test_the_sampler_keeps_its_own_copy_of_the_spec() -> None:
    import copy

    spec = copy.deepcopy(SPEC)
    s = rewarm.ReplaySampler(spec, rank=0, world_size=1)
    spec["stages"][0]["steps"] += 1  # the caller edits its dict afterwards
    again = rewarm.ReplaySampler(s.spec, rank=0, world_size=1)
    assert again.spec_hash == s.spec_hash
    again.load_state_dict(s.state_dict())


def test_a_world_size_below_one_from_the_environment_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    # WORLD_SIZE=0 was reported as "global_batch_size must be divisible by
    # the world size".
    monkeypatch.setenv("WORLD_SIZE", "0")
    with pytest.raises(
        rewarm.SpecError, match=r'"world_size" = 0 \(from environment variable WORLD_SIZE\): must be >= 1'
    ) as refused:
        rewarm.ReplaySampler(SPEC, rank=0)
    assert refused.value.field == "world_size"


def test_a_closed_sampler_says_closed_at_once() -> None:
    # close() left the window cached: steps inside it were still served and
    # the next fetch failed with "no sampler with id 1".
    s = rewarm.ReplaySampler(SPEC, rank=0, world_size=1, window=64)
    it = iter(s)
    next(it)
    s.close()
    for use in (lambda: s.batch(5), lambda: next(it), lambda: s.global_batch(0), lambda: s.quotas(3)):
        with pytest.raises(rewarm.SessionNotFound, match=r"this sampler was closed \(close\(\)\)"):
            use()
    s.close()  # still a no-op
