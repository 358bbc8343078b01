"""Test sessions for rewarm. `nox` runs the default set (what CI runs):
lint, types, go, tests, integration and demo. `nox -s bench`, `nox -s docs` and
`nox -s proto` run on request.

The Python sessions share one virtual environment (.nox/_shared) holding CPU
torch and the built package, so torch is installed once, and the package is
rebuilt only when its sources change.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nox
from nox.command import CommandFailed

ROOT = Path(__file__).resolve().parent
SHARED = ROOT / ".nox" / "_shared"
TORCH = "torch>=2.1"
TEST_DEPS = ["pytest>=8", "pyyaml>=6", "numpy", "torchdata>=0.11"]
# The README's and docs' quickstarts run against these (HF Trainer, Lightning, HF Llama).
FRAMEWORK_DEPS = ["transformers==5.24.0", "accelerate==1.15.0", "lightning==2.6.6"]
GRPCIO_TOOLS = "grpcio-tools==1.85.1"  # pins protoc (v35.1); regenerated code must not drift
RUFF = "ruff==0.17.6"
# mypy checks the package against the torch it runs with, so it runs in the shared environment.
TYPE_DEPS = ["mypy==2.4.1", "types-protobuf==7.35.1.20260906", "types-PyYAML==6.0.12.20261122"]
PY_SOURCES = ["python", "tests", "integration", "bench", "examples", "noxfile.py", "setup.py"]
# Fuzz budgets in executions (about 4 s each here), not seconds: Go 1.26's fuzz
# coordinator can fail a duration budget with "context deadline exceeded" as it
# expires (golang/go#75804, fixed in 1.27) although no input failed.
FUZZ_TARGETS = {
    "./sched": {"FuzzParseJSON": 120_000},
    "./dispatch": {"FuzzHandleFrame": 40_000, "FuzzCheckShape": 100_000},
    "./sidecar": {"FuzzReadFrame": 80_000},
    "./replay": {"FuzzParse": 120_000},
    "./mod": {"FuzzPlanSpec": 200_000},
}

nox.options.sessions = ["lint", "types", "go", "tests", "integration", "demo"]
nox.options.error_on_external_run = False


def _source_digest() -> str:
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    h = hashlib.sha256()
    for f in sorted(files):
        p = ROOT / f
        if p.is_file() and (
            p.suffix in {".go", ".py", ".proto", ".toml", ".mod", ".sum", ".pyi"} or f == "setup.py"
        ):
            h.update(f.encode())
            h.update(p.read_bytes())
    return h.hexdigest()


# torch from the package index is the CUDA build: its wheels take about 3.5 GB
# to download and 6 GB installed, even though rewarm runs it on the CPU.
TORCH_DISK_GB = 10


def _install(session: nox.Session, py: Path, *packages: str) -> None:
    """pip install into the shared environment without pip's cache (which would
    hold a second copy of torch's wheels), trying twice: a large download can
    be cut off."""
    if not any(SHARED.glob("lib/python*/site-packages/torch/__init__.py")):
        free_gb = shutil.disk_usage(SHARED).free / 1e9
        if free_gb < TORCH_DISK_GB:
            session.warn(
                f"installing torch needs about {TORCH_DISK_GB} GB free; {SHARED} has {free_gb:.1f} GB"
            )
    cmd = [str(py), "-m", "pip", "install", "-q", "--no-cache-dir", "--retries", "10", *packages]
    try:
        session.run(*cmd)
    except CommandFailed:
        session.warn("pip install failed; trying once more")
        session.run(*cmd)


def shared_python(session: nox.Session) -> str:
    """The shared environment's interpreter, with torch and the current
    package installed."""
    py = SHARED / "bin" / "python"
    if not py.exists():
        session.run(sys.executable, "-m", "venv", str(SHARED))
        session.run(str(py), "-m", "pip", "install", "-q", "--upgrade", "pip")
    _install(session, py, TORCH, *TEST_DEPS, *FRAMEWORK_DEPS)
    stamp = SHARED / "rewarm-build.sha256"
    digest = _source_digest()
    if not stamp.exists() or stamp.read_text() != digest:
        session.log("building and installing rewarm (Go binary + gopy extension)")
        # A local project directory is always rebuilt and reinstalled; its
        # dependencies are only checked.
        session.run(str(py), "-m", "pip", "install", "-q", str(ROOT))
        stamp.write_text(digest)
    session.env["PATH"] = f"{SHARED / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    session.env["OMP_NUM_THREADS"] = "1"
    return str(py)


@nox.session(venv_backend="none")
def go(session: nox.Session) -> None:
    """go vet, go test -race, and a short run of every fuzz target."""
    session.run("go", "vet", "./...")
    session.run("go", "test", "-race", "-short", "-count=1", "./...")
    # The large-n bijectivity checks, without the race detector's 10x cost.
    session.run("go", "test", "-count=1", "-run", "TestPermLargeSizes", "./replay")
    override = os.environ.get("REWARM_FUZZTIME")  # e.g. 60s or 1000000x, for a longer run
    for pkg, targets in FUZZ_TARGETS.items():
        for t, execs in targets.items():
            fuzztime = override or f"{execs}x"
            session.run(
                "go", "test", "-run=^$", f"-fuzz=^{t}$", f"-fuzztime={fuzztime}", "-fuzzminimizetime=10s", pkg
            )


@nox.session(venv_backend="none")
def types(session: nox.Session) -> None:
    """mypy over the package (its settings are in pyproject.toml): the types
    that py.typed promises users' checkers."""
    py = shared_python(session)
    session.run(py, "-m", "pip", "install", "-q", *TYPE_DEPS)
    session.run(py, "-m", "mypy")


@nox.session(venv_backend="none")
def tests(session: nox.Session) -> None:
    """Python unit tests against the installed package (both backends)."""
    py = shared_python(session)
    session.run(py, "-P", "-m", "pytest", "-q", "tests", *session.posargs)


@nox.session(venv_backend="none")
def integration(session: nox.Session) -> None:
    """CPU torch end to end: closed form, torch parity, torchrun, resume, fork, socket robustness."""
    py = shared_python(session)
    session.run(py, "-P", "-m", "pytest", "-q", "integration", *session.posargs)


@nox.session(venv_backend="none")
def demo(session: nox.Session) -> None:
    """The main job, quick: `rewarm demo --quick`, then a check that every policy
    produced finite losses and the results are complete; and the study's script
    under `rewarm launch -- torchrun` on 2 ranks, briefly."""
    py = shared_python(session)
    rewarm = str(SHARED / "bin" / "rewarm")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "results"
        session.run(rewarm, "demo", "--quick", "--out", str(out))
        session.run(py, str(ROOT / "integration" / "check_study.py"), str(out))
        # The README's multi-rank command as written, shortened to 10 steps per stage.
        readme = (ROOT / "README.md").read_text()
        line = next(ln for ln in readme.splitlines() if ln.startswith("rewarm launch -- torchrun "))
        argv = shlex.split(line)
        argv[0], argv[argv.index("torchrun")] = rewarm, str(SHARED / "bin" / "torchrun")
        ddp = Path(tmp) / "ddp"
        session.run(*argv, "--steps", "10", "--out", str(ddp))
        session.run(py, str(ROOT / "integration" / "check_study.py"), str(ddp))


@nox.session(venv_backend="none", default=False)
def docs(session: nox.Session) -> None:
    """Redraws the docs' images from their code blocks (`rewarm plot`); the tests
    session fails while a committed image differs from what its page draws."""
    py = shared_python(session)
    session.run(py, str(ROOT / "tests" / "test_docs.py"), "--update", *session.posargs)


@nox.session(venv_backend="none", default=False)
def bench(session: nox.Session) -> None:
    """Side-by-side benchmarks (not run by CI): per-step overhead against torch's schedulers,
    replay first-batch time and memory against torch's samplers and Megatron's blend build,
    and MoD layers against dense ones."""
    py = shared_python(session)
    session.run(py, "bench/bench_step.py", *session.posargs)
    session.run(py, "bench/bench_replay.py")
    session.run(py, "bench/bench_mod.py")
    # The sidecar under load: 64 clients x 10,000 requests, latency percentiles.
    session.run(
        "go",
        "test",
        "-count=1",
        "-run",
        "^TestLoad$",
        "-v",
        "./sidecar",
        env={"REWARM_LOADTEST_REQUESTS": "10000"},
    )
    session.run(
        "go", "test", "-run=^$", "-bench=.", "-benchmem", "./sched", "./dispatch", "./replay", "./mod"
    )


def _generate(session: nox.Session, go_out: Path, py_out: Path) -> None:
    session.install(GRPCIO_TOOLS)
    with tempfile.TemporaryDirectory(prefix="rewarm-protoc-gen-go-") as tools:
        session.run(
            "go", "build", "-o", tools + os.sep, "google.golang.org/protobuf/cmd/protoc-gen-go", external=True
        )
        session.run(
            "python",
            "-m",
            "grpc_tools.protoc",
            "-Iproto",
            f"--plugin=protoc-gen-go={Path(tools) / 'protoc-gen-go'}",
            f"--go_out={go_out}",
            "--go_opt=paths=source_relative",
            f"--python_out={py_out}",
            f"--pyi_out={py_out}",
            "proto/rewarm.proto",
        )


@nox.session(default=False)
def proto(session: nox.Session) -> None:
    """Regenerate the committed Go and Python protobuf code from proto/rewarm.proto."""
    _generate(session, ROOT / "proto" / "rewarmpb", ROOT / "python" / "rewarm" / "_proto")


@nox.session
def lint(session: nox.Session) -> None:
    """gofmt, go vet, ruff, and a check that the generated protobuf code is current."""
    unformatted = subprocess.run(
        ["gofmt", "-l", "."], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    unformatted = "\n".join(line for line in unformatted.splitlines() if not line.startswith("build/"))
    if unformatted:
        session.error(f"gofmt would reformat:\n{unformatted}")
    session.run("go", "vet", "./...", external=True)
    session.install(RUFF)
    session.run("ruff", "check", *PY_SOURCES)
    session.run("ruff", "format", "--check", *PY_SOURCES)
    with tempfile.TemporaryDirectory(prefix="rewarm-proto-check-") as tmp:
        go_out, py_out = Path(tmp) / "go", Path(tmp) / "py"
        go_out.mkdir()
        py_out.mkdir()
        _generate(session, go_out, py_out)
        stale = [
            str(committed.relative_to(ROOT))
            for fresh, committed in [
                (go_out / "rewarm.pb.go", ROOT / "proto" / "rewarmpb" / "rewarm.pb.go"),
                (py_out / "rewarm_pb2.py", ROOT / "python" / "rewarm" / "_proto" / "rewarm_pb2.py"),
                (py_out / "rewarm_pb2.pyi", ROOT / "python" / "rewarm" / "_proto" / "rewarm_pb2.pyi"),
            ]
            if not committed.exists() or fresh.read_bytes() != committed.read_bytes()
        ]
        if stale:
            session.error(
                f"generated protobuf code is stale: {', '.join(stale)}; run `nox -s proto` and commit"
            )
    shutil.rmtree(ROOT / ".ruff_cache", ignore_errors=True)
