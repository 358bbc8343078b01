"""rewarm: continual pre-training decisions (learning rate, replay, MoD plans)
computed by a Go core and handed to a PyTorch training loop.

Quick start::

    import rewarm
    opt = rewarm.wrap(torch.optim.AdamW(model.parameters()),
                      schedule={"kind": "cosine", "peak_lr": 3e-4, "warmup_steps": 100,
                                "total_steps": 10_000, "min_lr": 3e-5})
    for batch in data:
        loss = model(batch).mean(); loss.backward()
        opt.step(); opt.zero_grad()
"""

from rewarm._client import PROTOCOL_VERSION, Client, GroupSpec, SessionInfo, connect
from rewarm._errors import (
    ForkError,
    ProtocolError,
    RewarmError,
    SessionNotFound,
    SpecError,
    TransportError,
)
from rewarm._optim import RewarmLRScheduler, RewarmOptimizer, wrap
from rewarm._preview import preview
from rewarm._sampler import ReplaySampler
from rewarm._sidecar import Sidecar, find_binary
from rewarm._spec import load_spec, refined_spec
from rewarm._version import __version__

__all__ = [
    "PROTOCOL_VERSION",
    "Client",
    "ForkError",
    "GroupSpec",
    "ProtocolError",
    "ReplaySampler",
    "RewarmError",
    "RewarmLRScheduler",
    "RewarmOptimizer",
    "SessionInfo",
    "SessionNotFound",
    "Sidecar",
    "SpecError",
    "TransportError",
    "__version__",
    "connect",
    "find_binary",
    "load_spec",
    "preview",
    "refined_spec",
    "wrap",
]
