"""rewarm.ReplaySampler through both backends and a real DataLoader."""

from __future__ import annotations

from pathlib import Path

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
    assert all(torch.equal(x, y) for x, y in zip(rest, resumed, strict=True))
    other = rewarm.ReplaySampler({**SPEC, "seed": 5})
    with pytest.raises(ValueError, match="spec"):
        other.load_state_dict(state)


def test_quotas_and_seen_replay() -> None:
    s = rewarm.ReplaySampler(SPEC, rank=0, world_size=1)
    assert s.quotas(5) == {"pile": 12, "slimpajama": 0}
    assert s.quotas(30) == {"pile": 3, "slimpajama": 9}
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
            "stages[0].mixture.slimpajama",
        ),
    ],
)
def test_bad_specs(edit, field: str) -> None:
    import copy

    spec = copy.deepcopy(SPEC)
    if field == "stages[0].mixture.slimpajama":
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
        assert b.dtype == torch.int64 and b.shape == (4,)
        assert torch.equal(b, s.global_batch(step)[8:12])


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
    assert all(torch.equal(g, ref.batch(step)) for step, g in enumerate(got))
    assert s._client.transport.failovers >= 1
