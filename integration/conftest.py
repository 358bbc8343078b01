from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import rewarm

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def sidecar() -> Iterator[rewarm.Sidecar]:
    with rewarm.Sidecar() as sc:
        yield sc


def run_script(name: str, *args: str, env: dict[str, str] | None = None, timeout: float = 300) -> None:
    """Run integration/<name> in a fresh interpreter; fail the test with its output."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    proc = subprocess.run(
        [sys.executable, str(HERE / name), *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        pytest.fail(f"{name} {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
