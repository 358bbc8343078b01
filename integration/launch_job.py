"""Under `rewarm launch` + torchrun --max_restarts=1: on the first attempt
rank 0 fails once both ranks have opened a session; on the second it records
what the sidecar still holds. No process group is needed for that."""

from __future__ import annotations

import json
import os
import sys
import time

import rewarm

out = sys.argv[1]
attempt = int(os.environ["TORCHELASTIC_RESTART_COUNT"])
rank = int(os.environ["RANK"])
client = rewarm.connect("socket")
before = len(client.status().sessions)
client.open_session({"kind": "constant", "peak_lr": 0.1}, name=f"attempt{attempt}")
if attempt == 0:
    deadline = time.monotonic() + 60
    while len(client.status().sessions) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    if rank == 0:
        sys.exit(1)  # torchrun restarts both workers; the sidecar stays
    time.sleep(120)  # torchrun stops this worker when rank 0 fails
elif rank == 0:
    with open(os.path.join(out, f"attempt{attempt}.json"), "w") as f:
        json.dump({"socket": os.environ["REWARM_SOCKET"], "sessions_before_me": before}, f)
