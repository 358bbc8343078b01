"""Build hooks for rewarm: compile the Go binary and the gopy extension.

`pip install .` runs these. Metadata lives in pyproject.toml; this file only
adds the two Go build steps:

* the `rewarm` binary (static, CGO_ENABLED=0), installed into the
  environment's scripts directory the way ruff and uv ship theirs;
* the in-process extension `rewarm._native` (gopy over pybind/rewarmgo).

Both use the Go toolchain and the tool versions pinned in go.mod.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

# Imported after setuptools on purpose: this is setuptools' bundled distutils.
from distutils.command.build_scripts import build_scripts

ROOT = Path(__file__).resolve().parent
BIN_STAGING = Path("build") / "rewarm-bin" / "rewarm"
GOPY_PACKAGE = "github.com/rewarm/rewarm/pybind/rewarmgo"


def _go_version(text: str) -> tuple[int, int, int] | None:
    """(major, minor, patch) of a Go version such as 1.26.8, 1.27 or 1.27rc1."""
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    return (int(m[1]), int(m[2]), int(m[3] or 0)) if m else None


def _min_go() -> tuple[int, int, int]:
    """The go line of go.mod: with GOTOOLCHAIN=local an older Go refuses the module."""
    for line in (ROOT / "go.mod").read_text().splitlines():
        if line.startswith("go ") and (v := _go_version(line[3:].strip())):
            return v
    return (1, 26, 0)


MIN_GO = _min_go()
MIN_GO_TEXT = ".".join(map(str, MIN_GO))


class BuildError(SystemExit):
    def __init__(self, msg: str) -> None:
        super().__init__(f"\nrewarm build failed: {msg}\n")


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    # Never download another toolchain behind the user's back.
    env.setdefault("GOTOOLCHAIN", "local")
    env.setdefault("GOFLAGS", "-mod=mod")
    return env


def _require_tools() -> None:
    go = shutil.which("go")
    if go is None:
        raise BuildError(
            "the Go toolchain is not on PATH. rewarm's core is written in Go: install Go "
            f"{MIN_GO_TEXT} or newer (https://go.dev/doc/install) and run `pip install .` again."
        )
    out = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, env=_go_env())
    ver = out.stdout.strip().removeprefix("go")
    have = _go_version(ver)
    if have is not None and have < MIN_GO:
        raise BuildError(
            f"Go {ver} is too old; rewarm needs Go {MIN_GO_TEXT} or newer (go.mod's go line; "
            "GOTOOLCHAIN=auto would download it)."
        )
    if shutil.which(os.environ.get("CC", "cc")) is None and shutil.which("gcc") is None:
        raise BuildError(
            "no C compiler found (cc or gcc). The in-process extension is built with cgo: "
            "install gcc (Debian/Ubuntu: apt-get install gcc) and run `pip install .` again."
        )
    include = sysconfig.get_paths()["include"]
    if not (Path(include) / "Python.h").exists():
        raise BuildError(
            f"Python headers not found in {include}. Install the development package for "
            f"Python {sys.version_info.major}.{sys.version_info.minor} (Debian/Ubuntu: python3-dev)."
        )
    try:
        import pybindgen  # noqa: F401
    except ImportError as exc:
        raise BuildError(
            "pybindgen is missing from the build environment; it is listed in "
            "pyproject.toml's build-system.requires, so build with build isolation "
            "or `pip install pybindgen` first."
        ) from exc


def _run(cmd: list[str], **kw) -> None:
    print("rewarm build:", " ".join(cmd), flush=True)
    try:
        subprocess.run(cmd, check=True, cwd=ROOT, **kw)
    except subprocess.CalledProcessError as exc:
        raise BuildError(f"`{' '.join(cmd)}` exited with {exc.returncode} (see the output above)") from exc


def _version() -> str:
    ns: dict[str, str] = {}
    exec((ROOT / "python" / "rewarm" / "_version.py").read_text(), ns)
    return ns["__version__"]


def build_binary(dest: Path) -> None:
    env = _go_env()
    env["CGO_ENABLED"] = "0"
    dest.parent.mkdir(parents=True, exist_ok=True)
    _run(
        [
            "go",
            "build",
            "-trimpath",
            "-ldflags",
            f"-s -w -X main.version={_version()}",
            "-o",
            str(dest),
            "./sidecar/cmd/rewarm",
        ],
        env=env,
    )


def build_extension(dest: Path) -> None:
    """Run gopy over pybind/rewarmgo and copy the runtime files to dest."""
    env = _go_env()
    with tempfile.TemporaryDirectory(prefix="rewarm-gotools-") as tools:
        # gopy and goimports at the versions go.mod pins; gopy execs goimports by name.
        _run(
            [
                "go",
                "build",
                "-o",
                tools + os.sep,
                "github.com/go-python/gopy",
                "golang.org/x/tools/cmd/goimports",
            ],
            env=env,
        )
        env["PATH"] = tools + os.pathsep + env.get("PATH", "")
        # No libpython dependency: the symbols come from the interpreter that imports us.
        env["CGO_LDFLAGS_ALLOW"] = ".*"
        # gopy compiles inside its output folder, which must sit in this module;
        # the leading underscore keeps it out of `go vet ./...` and `go test ./...`.
        out = ROOT / "build" / "_gopy"
        shutil.rmtree(out, ignore_errors=True)
        _run(
            [
                str(Path(tools) / "gopy"),
                "build",
                f"-vm={sys.executable}",
                f"-output={out}",
                "-name=rewarmgo",
                "-no-make=true",
                "-dynamic-link=true",
                GOPY_PACKAGE,
            ],
            env=env,
        )
    dest.mkdir(parents=True, exist_ok=True)
    keep = [p for p in out.iterdir() if p.suffix == ".so" or p.name in {"rewarmgo.py", "go.py"}]
    if not any(p.suffix == ".so" for p in keep):
        raise BuildError(f"gopy produced no extension module in {out}")
    for p in keep:
        shutil.copy2(p, dest / p.name)
        if p.suffix == ".py":
            _drop_chdir(dest / p.name)
    shutil.rmtree(out, ignore_errors=True)
    (dest / "__init__.py").write_text(
        '"""gopy-generated bindings to rewarm\'s Go dispatcher (built at install time)."""\n'
    )


def _drop_chdir(path: Path) -> None:
    """gopy's wrappers chdir into their folder around the import of the .so.
    The import is relative (and the .so needs only libc), while the working
    directory is the whole process's: a thread that opened a relative path
    during rewarm's first in-process call would land in rewarm/_native, and a
    failed import left the process there. The two chdir lines become no-ops."""
    lines = path.read_text().splitlines(keepends=True)
    out = []
    for line in lines:
        if line.strip() in ("os.chdir(currentdir)", "os.chdir(cwd)"):
            indent = line[: len(line) - len(line.lstrip())]
            line = f"{indent}pass  # rewarm: no chdir (see setup.py, _drop_chdir)\n"
        out.append(line)
    if out == lines and "os.chdir(" in "".join(lines):
        raise BuildError(f"{path.name}: gopy's chdir lines changed form; update _drop_chdir")
    path.write_text("".join(out))


class BuildPy(build_py):
    def run(self) -> None:
        super().run()
        _require_tools()
        build_extension(Path(self.build_lib) / "rewarm" / "_native")


class BuildScripts(build_scripts):
    """Compile the Go binary, then copy it without the Python-script handling
    (which would try to read an ELF file as source)."""

    def run(self) -> None:
        _require_tools()
        build_binary(ROOT / BIN_STAGING)
        self.mkpath(self.build_dir)
        for script in self.scripts:
            target = os.path.join(self.build_dir, os.path.basename(script))
            self.copy_file(script, target)
            os.chmod(target, 0o755)


class BinaryDistribution(Distribution):
    """The wheel carries a CPython extension, so it is tagged per interpreter."""

    def has_ext_modules(self) -> bool:
        return True


setup(
    distclass=BinaryDistribution,
    cmdclass={"build_py": BuildPy, "build_scripts": BuildScripts},
    scripts=[str(BIN_STAGING)],
)
