"""Finding the `rewarm` binary and running `rewarm serve` as a child process."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
from pathlib import Path
from types import TracebackType


def find_binary() -> str:
    """Path of the `rewarm` binary: $REWARM_BIN, then the scripts folder of
    this environment (where `pip install` put it), then the user scheme, then
    PATH."""
    env = os.environ.get("REWARM_BIN")
    if env:
        return env
    name = "rewarm.exe" if sys.platform == "win32" else "rewarm"
    candidates = [Path(sysconfig.get_path("scripts")) / name]
    user_scheme = f"{os.name}_user"
    if user_scheme in sysconfig.get_scheme_names():
        candidates.append(Path(sysconfig.get_path("scripts", scheme=user_scheme)) / name)
    candidates.append(Path(sys.executable).parent / name)
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    found = shutil.which(name)
    if found:
        return found
    raise FileNotFoundError(
        "the `rewarm` binary was not found; install the package with `pip install .` or set REWARM_BIN"
    )


def _terminate(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


class Sidecar:
    """Runs `rewarm serve --socket PATH` and waits for its READY line.

    Use as a context manager; on exit it sends SIGTERM and waits. One not
    stopped by then is stopped when the interpreter exits, an uncaught
    exception included, so it does not outlive the script.
    """

    def __init__(
        self, socket_path: str | os.PathLike[str] | None = None, *extra_args: str, timeout: float = 30.0
    ) -> None:
        self._tmp: str | None = None
        if socket_path is None:
            self._tmp = tempfile.mkdtemp(prefix="rewarm-")
            socket_path = os.path.join(self._tmp, "rewarm.sock")
        self.path = os.fspath(socket_path)
        self.proc = subprocess.Popen(
            [find_binary(), "serve", "--socket", self.path, *extra_args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.log: list[str] = []
        proc = self.proc
        self._at_exit = lambda: _terminate(proc)
        atexit.register(self._at_exit)
        ready = self._wait_ready(timeout)
        threading.Thread(target=self._drain, daemon=True).start()
        if not ready:
            self.stop()
            raise RuntimeError(f"rewarm serve did not become ready: {' '.join(self.log)[-2000:]}")

    def _wait_ready(self, timeout: float) -> bool:
        assert self.proc.stdout is not None
        timer = threading.Timer(timeout, self.proc.kill)
        timer.start()
        try:
            line = self.proc.stdout.readline()
        finally:
            timer.cancel()
        if line.startswith("READY "):
            return True
        self.log.append(line)
        if self.proc.stderr is not None and self.proc.poll() is not None:
            self.log.append(self.proc.stderr.read())
        return False

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        atexit.unregister(self._at_exit)
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
        return self.proc.returncode

    def __enter__(self) -> Sidecar:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
