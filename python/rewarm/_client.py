"""A typed client over either transport. It speaks only rewarm.v1 messages and
turns Error responses into exceptions; all schedule maths happens in Go."""

from __future__ import annotations

import contextlib
import itertools
import json
import numbers
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from google.protobuf.message import DecodeError

from rewarm._errors import ProtocolError, RewarmError, SessionNotFound, SpecError, TransportError
from rewarm._proto import rewarm_pb2 as pb
from rewarm._transport import InProcessTransport, SocketTransport, Transport
from rewarm._version import __version__

PROTOCOL_VERSION: int = pb.PROTOCOL_VERSION_CURRENT
Backend = Literal["auto", "inprocess", "socket"]


@dataclass(frozen=True)
class ControlPoll:
    """What one poll for controls returned (see Client.poll_controls)."""

    controls: list[dict[str, Any]]
    epoch: int
    latest_seq: int


@dataclass(frozen=True)
class SessionInfo:
    session_id: int
    schedule: dict[str, Any]
    step: int
    name: str
    plan_version: int = 0


@dataclass(frozen=True)
class GroupSpec:
    """How one param group derives its values from the schedule (see Group in
    proto/rewarm.proto): ``multiplier x`` the rate, remapped to the group's own
    [min_lr, peak_lr] when either is set; ``wd_mult x`` the weight decay.
    A field left as None is not given: the group's own key applies (wrap),
    or 1 for the multipliers (on the wire)."""

    multiplier: float | None = None
    min_lr: float | None = None
    peak_lr: float | None = None
    wd_mult: float | None = None

    def to_proto(self) -> pb.Group:
        g = pb.Group(
            multiplier=1.0 if self.multiplier is None else self.multiplier,
            wd_mult=1.0 if self.wd_mult is None else self.wd_mult,
        )
        if self.min_lr is not None:
            g.min_lr = self.min_lr
        if self.peak_lr is not None:
            g.peak_lr = self.peak_lr
        return g


@dataclass(frozen=True)
class Values:
    """Rates for `count` consecutive updates: ``lr`` and ``weight_decay`` are
    row-major [count][groups]; ``momentum`` has one value per update. The
    last two are empty when the schedule does not set them."""

    step: int
    count: int
    groups: int
    lr: list[float]
    momentum: list[float]
    weight_decay: list[float]
    plan_version: int


@dataclass(frozen=True)
class SamplerInfo:
    sampler_id: int
    spec_hash: str
    total_steps: int
    global_batch_size: int
    source_names: list[str]
    source_sizes: list[int]
    stratified: bool


@dataclass(frozen=True)
class Preview:
    steps: list[int]
    lr: list[float]
    momentum: list[float]
    weight_decay: list[float]
    phases: list[tuple[str, int]]


def _struct_to_dict(s: Any) -> dict[str, Any]:
    """A protobuf Struct as plain Python values. Not json_format: it refuses
    NaN and inf, which a refined spec's grad_norms may hold. Struct numbers
    are doubles; integral ones come back as ints."""
    return {k: _from_value(v) for k, v in s.fields.items()}


def _from_value(v: Any) -> Any:
    kind = v.WhichOneof("kind")
    if kind == "number_value":
        x = v.number_value
        return int(x) if x.is_integer() and abs(x) < 2**53 else x
    if kind == "struct_value":
        return _struct_to_dict(v.struct_value)
    if kind == "list_value":
        return [_from_value(x) for x in v.list_value.values]
    if kind in ("string_value", "bool_value"):
        return getattr(v, kind)
    return None


def _raise(err: Any) -> None:
    code = pb.ErrorCode.Name(err.code)
    short = code.removeprefix("ERROR_CODE_")
    if short == "INVALID_ARGUMENT":
        raise SpecError(err.message, code=short, field=err.field)
    if short == "NOT_FOUND":
        raise SessionNotFound(err.message, code=short, field=err.field)
    if short in {
        "PROTOCOL_MISMATCH",
        "HANDSHAKE_REQUIRED",
        "MALFORMED",
        "FRAME_TOO_LARGE",
        "UNIMPLEMENTED",
        "PERMISSION_DENIED",
    }:
        raise ProtocolError(err.message, code=short, field=err.field)
    raise RewarmError(err.message, code=short, field=err.field)


def int_arg(v: Any, name: str, lo: int = 0) -> int:
    """v as a step count or index: an integer (numpy's too) in [lo, 2^63),
    never a bool or a float that would be truncated."""
    if type(v) is int and lo <= v < 1 << 63:  # the common case, without the ABC check
        return v
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise SpecError(
            f'field "{name}" = {v!r:.80}: expected an integer', code="INVALID_ARGUMENT", field=name
        )
    if not lo <= int(v) < 1 << 63:
        raise SpecError(f'field "{name}" = {v}: must be in [{lo}, 2^63)', code="INVALID_ARGUMENT", field=name)
    return int(v)


def _plain(v: Any, path: str) -> Any:
    """A spec value as JSON-like Python: numpy scalars and 0-d tensors become
    numbers; anything else that cannot cross is refused, naming its field."""
    # Exact types first: the abstract-class checks below cost tens of
    # microseconds the first time a process makes them (a cold sampler).
    t = type(v)
    if t is float or t is str or t is bool or v is None:
        return v
    if t is dict:
        out: dict[str, Any] = {}
        for k, x in v.items():
            if type(k) is not str:
                raise SpecError(f"field {path or '(top)'}: key {k!r} is not a string", field=path)
            out[k] = _plain(x, f"{path}.{k}" if path else k)
        return out
    if t is list or t is tuple:
        return [x if type(x) is float else _plain(x, f"{path}[{i}]") for i, x in enumerate(v)]
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) > 1 << 53:
        # Specs cross as protobuf Structs, whose numbers are doubles.
        raise SpecError(
            f'field "{path}" = {v}: too large; integers are carried exactly only up to 2^53',
            code="INVALID_ARGUMENT",
            field=path,
        )
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, Mapping):
        out = {}
        for k, x in v.items():
            if not isinstance(k, str):
                raise SpecError(f"field {path or '(top)'}: key {k!r} is not a string", field=path)
            out[k] = _plain(x, f"{path}.{k}" if path else k)
        return out
    if isinstance(v, Sequence) and not isinstance(v, (bytes, bytearray)):  # also a protobuf ListValue
        return [_plain(x, f"{path}[{i}]") for i, x in enumerate(v)]
    if getattr(v, "ndim", None) == 0 and callable(getattr(v, "item", None)):
        x = v.item()
        if isinstance(x, (bool, int, float)):
            return _plain(x, path)
    raise SpecError(
        f'field "{path}" = {v!r}: a {type(v).__name__} cannot be sent '
        "(use a number, string, bool, list or dict)",
        code="INVALID_ARGUMENT",
        field=path,
    )


def _fill(struct: Any, spec: Mapping[str, Any], what: str) -> None:
    plain = _plain(spec, "")
    try:
        struct.update(plain)
    except (ValueError, TypeError) as exc:
        raise SpecError(f"{what} spec cannot be encoded: {exc}", code="INVALID_ARGUMENT") from exc


def _json_default(v: Any) -> Any:
    if getattr(v, "ndim", None) == 0 and callable(getattr(v, "item", None)):
        return v.item()
    raise TypeError(type(v).__name__)


# 16 digits in a row: possibly an integer past 2^53 (9007199254740992).
_LONG_DIGITS = re.compile(r"\d{16}")


def same_server(path: str, instance: int, failover: bool = False) -> Callable[[bytes], None]:
    """A check for the hello reply of a reconnect: the same server instance
    is the same sessions; a restarted sidecar is not, and must not be used
    as if it were (its ids name other sessions, or none). failover: the
    caller moves its objects over itself, so the error gives no advice."""
    advice = ""
    if not failover:
        advice = " (connect with failover=True, the default, to carry on in-process and move them over)"

    def check(reply: bytes) -> None:
        resp = pb.Response.FromString(reply)
        body = resp.WhichOneof("body")
        if body == "error":
            _raise(resp.error)
        if body != "hello":
            raise ProtocolError(f"handshake: expected a hello reply, got {body}", code="MALFORMED")
        if resp.hello.instance != instance:
            raise TransportError(
                f"rewarm: the sidecar at {path} restarted: its sessions and samplers are not this client's"
                + advice,
                code="UNAVAILABLE",
            )

    return check


class Client:
    """Request/response calls to the dispatcher. Construct with connect()."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self._ids = itertools.count(1)
        # True for the per-process client that shared_client() hands out.
        self.shared = False
        # Ids to close before the next request (see release_later).
        self._orphans: list[int] = []
        self.server = ""
        self.schedule_kinds: tuple[str, ...] = ()
        self.hello()

    @property
    def kind(self) -> str:
        return self.transport.kind

    def release_later(self, session_id: int) -> None:
        """Close a session or sampler before this client's next request. A
        garbage-collection finalizer may run in the middle of another call
        on this client, so it must not call in itself."""
        self._orphans.append(session_id)

    def call(self, req: pb.Request) -> pb.Response:
        while self._orphans:
            try:
                orphan = self._orphans.pop()
            except IndexError:  # another thread took the last one
                break
            with contextlib.suppress(RewarmError):  # already gone
                self._call(pb.Request(close_session=pb.CloseSession(session_id=orphan)))
        return self._call(req)

    def _call(self, req: pb.Request) -> pb.Response:
        req.id = next(self._ids)
        reply = self.transport.roundtrip(req.SerializeToString())
        try:
            resp = pb.Response.FromString(reply)
        except DecodeError as exc:
            # Framed, but not a rewarm message: the connection cannot be
            # trusted to be in step, so the next request starts a new one.
            self.transport.close()
            raise ProtocolError(
                f"rewarm: the {self.transport.kind} reply to the {req.WhichOneof('body')} request "
                f"({len(reply)} bytes) is not a rewarm message: {exc}",
                code="MALFORMED",
            ) from exc
        if resp.WhichOneof("body") == "error":
            _raise(resp.error)
        if resp.id != req.id:
            raise ProtocolError(f"response id {resp.id} does not match request id {req.id}", code="MALFORMED")
        return resp

    def hello(self) -> None:
        req = pb.Request(hello=pb.Hello(protocol_version=PROTOCOL_VERSION, client=f"rewarm-py/{__version__}"))
        resp = self.call(req)
        self.server = resp.hello.server
        self.schedule_kinds = tuple(resp.hello.schedule_kinds)
        if isinstance(self.transport, SocketTransport):
            # A reconnect (after a fork or an error) is a new connection and
            # must shake hands again before the request that triggered it.
            req.id = 0
            self.transport.greeting = req.SerializeToString()
            self.transport.check_greeting = same_server(self.transport.path, resp.hello.instance)

    def open_session(self, schedule: Mapping[str, Any], name: str = "") -> SessionInfo:
        req = pb.Request(open_session=pb.OpenSession(name=name))
        _fill(req.open_session.schedule, schedule, "schedule")
        return self._session(self.call(req).session)

    @staticmethod
    def _session(s: Any) -> SessionInfo:
        return SessionInfo(s.session_id, _struct_to_dict(s.schedule), s.step, s.name, s.plan_version)

    def get_values(
        self, session_id: int, step: int, count: int = 1, groups: Sequence[GroupSpec] = (GroupSpec(),)
    ) -> Values:
        """Values for updates step+1 .. step+count (after `step` updates applied)."""
        req = pb.Request(
            get_lr=pb.GetLR(
                session_id=session_id, step=step, count=count, groups=[g.to_proto() for g in groups]
            )
        )
        r = self.call(req).lr
        return Values(
            r.step, r.count, r.groups, list(r.values), list(r.momentum), list(r.weight_decay), r.plan_version
        )

    def get_lr(
        self, session_id: int, step: int, count: int = 1, multipliers: Sequence[float] = (1.0,)
    ) -> list[float]:
        """Learning rates for updates step+1 .. step+count, row-major [count][groups]."""
        return self.get_values(session_id, step, count, [GroupSpec(multiplier=m) for m in multipliers]).lr

    def replan(self, session_id: int, at_step: int, op: str, **args: Any) -> SessionInfo:
        """Apply a re-plan: op is "extend" (total_steps, mode), "anneal" (steps,
        shape, min_lr) or "new_stage" (schedule)."""
        req = pb.Request(replan=pb.Replan(session_id=session_id, at_step=int_arg(at_step, "at_step")))
        # Each op's arguments, with the type each must have.
        kinds: dict[str, dict[str, str]] = {
            "extend": {"total_steps": "int", "mode": "str"},
            "anneal": {"steps": "int", "shape": "str", "min_lr": "number"},
            "new_stage": {"schedule": "spec"},
        }
        if op not in kinds:
            raise SpecError(f'replan: op {op!r}: must be "extend", "anneal" or "new_stage"', field="op")
        unknown = sorted(set(args) - set(kinds[op]))
        if unknown:
            raise SpecError(
                f"replan {op}: unexpected arguments {unknown} (it takes {sorted(kinds[op])})",
                field=unknown[0],
            )
        if op == "new_stage":
            if "schedule" not in args:
                raise SpecError("replan new_stage: give schedule= (the new stage's spec)", field="schedule")
            req.replan.new_stage.SetInParent()
            _fill(req.replan.new_stage.schedule, args["schedule"], "new_stage schedule")
            return self._session(self.call(req).session)
        required = {"extend": "total_steps", "anneal": "steps"}[op]
        if required not in args:
            raise SpecError(f'replan {op}: field "{required}" is missing: {op} needs it', field=required)
        vals: dict[str, Any] = {}
        for name, v in args.items():
            kind = kinds[op][name]
            if kind == "int":
                vals[name] = int_arg(v, name)
            elif kind == "number":
                if isinstance(v, bool) or not isinstance(v, numbers.Real):
                    raise SpecError(f'replan {op}: field "{name}" = {v!r:.80}: expected a number', field=name)
                vals[name] = float(v)
            else:
                if not isinstance(v, str):
                    raise SpecError(f'replan {op}: field "{name}" = {v!r:.80}: expected a string', field=name)
                vals[name] = v
        if op == "extend":
            req.replan.extend.CopyFrom(pb.Extend(**vals))
        else:
            req.replan.anneal.CopyFrom(pb.Anneal(**vals))
        return self._session(self.call(req).session)

    def report(self, session_id: int, step: int, metric: float) -> int:
        """Record a metric observed after `step` updates; returns the plan version."""
        try:
            value = float(metric)
        except (TypeError, ValueError):
            raise SpecError(f"report: metric={metric!r:.80}: expected a number", field="metric") from None
        req = pb.Request(report=pb.Report(session_id=session_id, step=step, metric=value))
        return self.call(req).ack.plan_version

    def preview(
        self,
        schedule: Mapping[str, Any],
        steps: Sequence[int] | None = None,
        *,
        start: int = 0,
        count: int = 0,
        stride: int = 1,
    ) -> Preview:
        req = pb.Request(preview=pb.Preview(steps=list(steps or ()), start=start, count=count, stride=stride))
        _fill(req.preview.schedule, schedule, "schedule")
        r = self.call(req).preview
        return Preview(
            list(r.steps),
            list(r.lr),
            list(r.momentum),
            list(r.weight_decay),
            [(p.name, p.start) for p in r.phases],
        )

    def open_sampler(self, spec: Mapping[str, Any]) -> SamplerInfo:
        req = pb.Request(open_sampler=pb.OpenSampler())
        try:
            # JSON is several times cheaper to build than a Struct and decodes
            # to the same values. NaN and non-JSON values take the Struct
            # path, so that the field is named.
            text = json.dumps(spec, allow_nan=False, default=_json_default)
            if _LONG_DIGITS.search(text):
                _plain(spec, "")  # an integer past 2^53 is refused, naming its field
            req.open_sampler.spec_json = text
        except (ValueError, TypeError) as exc:
            if isinstance(exc, SpecError):
                raise
            _fill(req.open_sampler.spec, spec, "replay")
        r = self.call(req).sampler
        return SamplerInfo(
            r.sampler_id,
            r.spec_hash,
            r.total_steps,
            r.global_batch_size,
            list(r.source_names),
            list(r.source_sizes),
            r.stratified,
        )

    def get_batches(
        self, sampler_id: int, step: int, count: int, rank: int = 0, world_size: int = 1
    ) -> tuple[int, int, bytes]:
        """(count, per_batch, ids): little-endian int64 ids of rank's slice of
        the global batches of `count` steps from `step` (fewer at the plan's end)."""
        req = pb.Request(
            get_batches=pb.GetBatches(
                sampler_id=sampler_id, step=step, count=count, rank=rank, world_size=world_size
            )
        )
        r = self.call(req).batches
        return r.count, r.per_batch, r.ids

    def get_quotas(self, sampler_id: int, step: int, count: int = 1) -> list[list[int]]:
        r = self.call(
            pb.Request(get_quotas=pb.GetQuotas(sampler_id=sampler_id, step=step, count=count))
        ).quotas
        k = r.sources
        return [list(r.counts[i * k : (i + 1) * k]) for i in range(r.count)]

    def poll_control(
        self, after_seq: int, session_id: int = 0, step: int = -1, control_epoch: int = 0
    ) -> list[dict[str, Any]]:
        """Controls posted with `rewarm ctl` after after_seq, as re-plan dicts
        with "seq", "epoch", "op", "at_step", "target_name" and the op's
        arguments. control_epoch is the "epoch" after_seq came with: if the
        sidecar's numbering is another (it restarted without a snapshot),
        every queued control is returned."""
        return self.poll_controls(after_seq, session_id, step, control_epoch).controls

    def poll_controls(
        self, after_seq: int, session_id: int = 0, step: int = -1, control_epoch: int = 0
    ) -> ControlPoll:
        """poll_control, with the numbering's epoch and newest number: a client
        has seen every control up to latest_seq once it has these."""
        req = pb.Request(
            poll_control=pb.PollControl(
                after_seq=after_seq, session_id=session_id, step=step, control_epoch=control_epoch
            )
        )
        resp = self.call(req).controls
        return ControlPoll(self._controls(resp), resp.control_epoch, resp.latest_seq)

    @staticmethod
    def _controls(resp: Any) -> list[dict[str, Any]]:
        out = []
        for c in resp.controls:
            r = c.replan
            d: dict[str, Any] = {
                "seq": c.seq,
                "epoch": resp.control_epoch,
                "at_step": r.at_step,
                "target_name": c.target_name,
            }
            op = r.WhichOneof("op")
            if op == "extend":
                d.update(op="extend", total_steps=r.extend.total_steps, mode=r.extend.mode or "continuous")
            elif op == "anneal":
                d.update(op="anneal", steps=r.anneal.steps, shape=r.anneal.shape or "cosine")
                if r.anneal.HasField("min_lr"):
                    d["min_lr"] = r.anneal.min_lr
            elif op == "new_stage":
                d.update(op="new_stage", schedule=_struct_to_dict(r.new_stage.schedule))
            out.append(d)
        return out

    def status(self) -> Any:
        return self.call(pb.Request(get_status=pb.GetStatus())).status

    def mod_plan(self, spec: Mapping[str, Any]) -> Any:
        """The raw rewarm.v1.ModPlan for a plan spec."""
        req = pb.Request(get_mod_plan=pb.GetModPlan())
        _fill(req.get_mod_plan.spec, spec, "plan")
        return self.call(req).mod_plan

    def get_state(self, session_id: int, step: int) -> bytes:
        return self.call(pb.Request(get_state=pb.GetState(session_id=session_id, step=step))).state.msgpack

    def restore_state(self, blob: bytes, name: str = "") -> SessionInfo:
        req = pb.Request(restore_state=pb.RestoreState(msgpack=blob, name=name))
        return self._session(self.call(req).session)

    def close_session(self, session_id: int) -> None:
        self.call(pb.Request(close_session=pb.CloseSession(session_id=session_id)))

    def close(self) -> None:
        self.transport.close()


# One in-process client per process for the short-lived users (samplers,
# plans, previews): a fresh one per object costs a dispatcher and a handshake.
_shared: tuple[int, Client] | None = None


def shared_client(backend: Backend = "auto") -> Client:
    """A client for a call site that does not own a connection. The in-process
    backend reuses one client per process (its dispatcher keeps each caller's
    sessions apart by id); a socket backend gets its own connection, so
    close() the result either way."""
    global _shared
    if backend == "inprocess" or (backend == "auto" and not os.environ.get("REWARM_SOCKET")):
        pid = os.getpid()
        if _shared is None or _shared[0] != pid:
            client = Client(InProcessTransport())
            client.shared = True
            _shared = (pid, client)
        return _shared[1]
    return connect(backend)


def connect(
    backend: Backend = "auto",
    socket_path: str | os.PathLike[str] | None = None,
    failover: bool | None = None,
) -> Client:
    """Open a client. ``auto`` uses the sidecar when REWARM_SOCKET (or
    socket_path) is set and the in-process extension otherwise.

    A socket client fails over: if the sidecar dies it computes in-process and
    reconnects with backoff. failover=False turns that off; left as None it
    is on unless REWARM_FAILOVER=0, which is how wrap(), ReplaySampler and
    preview() (which open their own clients) turn it off. Under torchrun
    with backend="socket" and no path, local rank 0 connects to the node's
    sidecar or spawns one (see rewarm._launch.connect_or_spawn).
    """
    if backend not in ("auto", "inprocess", "socket"):
        raise SpecError(f"backend={backend!r}: expected 'auto', 'inprocess' or 'socket'", field="backend")
    if failover is None:
        env = os.environ.get("REWARM_FAILOVER", "1").strip().lower()
        if env not in ("0", "1", "false", "true", "no", "yes", "off", "on", ""):
            raise SpecError(f"REWARM_FAILOVER={env!r}: expected 1 or 0", field="REWARM_FAILOVER")
        failover = env not in ("0", "false", "no", "off")
    path = socket_path if socket_path is not None else os.environ.get("REWARM_SOCKET") or None
    if backend == "socket" and not path and "LOCAL_RANK" in os.environ:
        from rewarm._launch import connect_or_spawn

        path = connect_or_spawn()
    if backend == "socket" or (backend == "auto" and path):
        if not path:
            raise SpecError(
                "backend='socket' needs a socket path: set REWARM_SOCKET (or pass socket_path= to "
                "rewarm.connect()); under torchrun one is found or started per node",
                field="socket_path",
            )
        if not failover:
            return Client(SocketTransport(path))
        from rewarm._failover import connect_failover

        return Client(
            connect_failover(os.fspath(path), f"rewarm-py/{__version__}", must_connect=backend == "socket")
        )
    return Client(InProcessTransport())
