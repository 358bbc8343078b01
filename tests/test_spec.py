from __future__ import annotations

import json
from pathlib import Path

import pytest

import rewarm

SPEC = {"kind": "cosine", "peak_lr": 0.1, "total_steps": 50, "warmup_steps": 5}


def test_load_spec_from_dict_yaml_json(tmp_path: Path) -> None:
    y = tmp_path / "s.yaml"
    y.write_text("kind: cosine\npeak_lr: 0.1\ntotal_steps: 50\nwarmup_steps: 5\n")
    j = tmp_path / "s.json"
    j.write_text(json.dumps(SPEC))
    assert rewarm.load_spec(SPEC) == SPEC
    assert rewarm.load_spec(y) == SPEC
    assert rewarm.load_spec(str(j)) == SPEC


def test_load_spec_rejects(tmp_path: Path) -> None:
    t = tmp_path / "s.txt"
    t.write_text("x")
    with pytest.raises(rewarm.SpecError, match="unknown extension"):
        rewarm.load_spec(t)
    lst = tmp_path / "l.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(rewarm.SpecError, match="mapping"):
        rewarm.load_spec(lst)
    with pytest.raises(FileNotFoundError):
        rewarm.load_spec(tmp_path / "missing.yaml")
    with pytest.raises(TypeError):
        rewarm.load_spec(42)  # type: ignore[arg-type]
