"""Every code block in docs/ runs, so the docs cannot rot.

Each page runs top to bottom in a fresh temporary directory:

- ```python``` blocks are executed;
- ```sh``` blocks run under ``bash -euo pipefail`` with the package's
  ``rewarm`` binary on PATH;
- a block whose info string carries ``file=NAME`` (```yaml file=cosine.yaml```)
  is written to NAME for later blocks to use.

Any other block fails the page. A page's images (``![..](img/x.png)``) must
exist, be written by the page's blocks, and match the committed ones byte for
byte. ``python tests/test_docs.py --update [PAGE ...]`` (``nox -s docs``)
rewrites the committed images from the blocks (of every page, or of the pages
whose file name stem is given).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", flags=re.S | re.M)
IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+\.(?:png|svg))\)")


@dataclass(frozen=True)
class Block:
    lang: str
    attrs: dict[str, str]
    code: str
    line: int


def blocks(text: str) -> list[Block]:
    out = []
    for m in FENCE.finditer(text):
        info = m.group(1).split()
        lang = info[0] if info else ""
        attrs = dict(a.split("=", 1) if "=" in a else (a, "") for a in info[1:])
        out.append(Block(lang, attrs, m.group(2), text.count("\n", 0, m.start()) + 1))
    return out


def pages() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md"))


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("REWARM_SOCKET", None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def run_page(page: Path, work: Path) -> list[str]:
    """Runs every block of page in work; returns the failures, each naming
    the block's line."""
    failures: list[str] = []
    where = page.relative_to(ROOT)
    cwd = os.getcwd()
    os.chdir(work)
    saved_socket = os.environ.pop("REWARM_SOCKET", None)
    try:
        for b in blocks(page.read_text()):
            at = f"{where}:{b.line} ({b.lang or 'no language'})"
            if "file" in b.attrs:
                (work / b.attrs["file"]).write_text(b.code)
                continue
            if b.lang == "python":
                try:
                    exec(compile(b.code, at, "exec"), {"__name__": "__docs__"})
                except Exception as e:
                    failures.append(f"{at}: {type(e).__name__}: {e}")
                    break
            elif b.lang == "sh":
                r = subprocess.run(
                    ["bash", "-euo", "pipefail", "-c", b.code],
                    cwd=work,
                    env=_env(),
                    capture_output=True,
                    text=True,
                    timeout=600,
                )
                if r.returncode != 0:
                    failures.append(f"{at}: exit {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
                    break
            else:
                failures.append(f"{at}: a block no test runs; use python, sh or file=NAME")
    finally:
        os.chdir(cwd)
        if saved_socket is not None:
            os.environ["REWARM_SOCKET"] = saved_socket
    return failures


def images(page: Path) -> list[tuple[Path, str]]:
    """(committed path, file name a block would write) for each image the page shows."""
    out = []
    for ref in IMAGE.findall(page.read_text()):
        if "://" not in ref:
            out.append(((page.parent / ref).resolve(), Path(ref).name))
    return out


PAGES = pages()


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(DOCS)) for p in PAGES])
def test_doc_page_runs(page: Path, tmp_path: Path) -> None:
    failures = run_page(page, tmp_path)
    for committed, name in images(page):
        if not committed.exists():
            missing = committed.relative_to(ROOT)
            failures.append(f"{page.relative_to(ROOT)}: shows {missing}, which is missing")
            continue
        made = tmp_path / name
        if not made.exists():
            # Every image a docs page shows is drawn by its blocks, so it is
            # checked; a block writing another name would leave it stale.
            failures.append(f"{page.relative_to(ROOT)}: shows {name}, which none of its blocks wrote")
        elif made.read_bytes() != committed.read_bytes():
            failures.append(
                f"{committed.relative_to(ROOT)} differs from what the page's blocks draw; run `nox -s docs`"
            )
    assert not failures, "\n\n".join(failures)


def test_every_kind_has_a_page() -> None:
    import rewarm

    kinds = set(rewarm.connect("inprocess").schedule_kinds)
    have = {p.stem for p in (DOCS / "schedules").glob("*.md")}
    assert kinds <= have, f"no page for {sorted(kinds - have)}"


def update(only: list[str]) -> int:
    """Reruns the pages (all, or those named) and copies the images their
    blocks draw into docs/."""
    bad = 0
    for page in PAGES:
        if only and page.stem not in only:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            failures = run_page(page, work)
            for f in failures:
                print(f, file=sys.stderr)
                bad += 1
            for committed, name in images(page):
                made = work / name
                if made.exists():
                    committed.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(made, committed)
                    print(f"wrote {committed.relative_to(ROOT)}")
    return 1 if bad else 0


if __name__ == "__main__":
    if sys.argv[1:2] != ["--update"]:
        sys.exit("usage: python tests/test_docs.py --update [PAGE ...]")
    sys.exit(update(sys.argv[2:]))
