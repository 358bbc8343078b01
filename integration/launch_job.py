"""Under `rewarm launch` + torchrun --max_restarts=1: on the first attempt
rank 0 fails after opening its session; on the second both ranks record
what the sidecar still holds."""

from __future__ import annotations

import json
import os
import sys

import torch.distributed as dist

import rewarm

out = sys.argv[1]
attempt = int(os.environ["TORCHELASTIC_RESTART_COUNT"])
dist.init_process_group("gloo")
client = rewarm.connect("socket")
before = len(client.status().sessions)
client.open_session({"kind": "constant", "peak_lr": 0.1}, name=f"attempt{attempt}")
dist.barrier()
if attempt == 0 and dist.get_rank() == 0:
    sys.exit(1)
if dist.get_rank() == 0:
    with open(os.path.join(out, f"attempt{attempt}.json"), "w") as f:
        json.dump({"socket": os.environ["REWARM_SOCKET"], "sessions_before_me": before}, f)
dist.barrier()
dist.destroy_process_group()
