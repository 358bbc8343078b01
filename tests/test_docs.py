"""Every ```python block in docs/*.md runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
BLOCKS = [
    (p.name, i, b)
    for p in sorted(DOCS.glob("*.md"))
    for i, b in enumerate(re.findall(r"```python\n(.*?)```", p.read_text(), flags=re.S))
]


@pytest.mark.parametrize(("name", "i", "code"), BLOCKS, ids=[f"{n}-{i}" for n, i, _ in BLOCKS])
def test_doc_block_runs(
    name: str, i: int, code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("REWARM_SOCKET", raising=False)
    exec(compile(code, f"docs/{name} block {i}", "exec"), {"__name__": "__docs__"})
