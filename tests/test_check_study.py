"""integration/check_study.py, the CI gate on `rewarm demo --quick`, flags what it must."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("check_study", ROOT / "integration" / "check_study.py")
assert spec and spec.loader
check_study = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_study)

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 16


def complete(out: Path) -> None:
    rows = ["policy,replay,stage,val_loss_A,val_loss_B,wall_s"]
    curves = ["policy,replay,step,val_loss_A,val_loss_B"]
    lines = ["| policy | replay | a | b | c | d |", "|---|---|---|---|---|---|"]
    for p in sorted(check_study.POLICIES):
        for r in (0, 1):
            rows += [f"{p},{r},1,3.1,5.0,1.0", f"{p},{r},2,4.2,3.9,2.0"]
            curves += [f"{p},{r},{s},3.0,4.0" for s in (50, 100)]
            lines.append(f"| {p} | {r} | 1 | 2 | 3 | 4 |")
    (out / "results.csv").write_text("\n".join(rows) + "\n")
    (out / "curves.csv").write_text("\n".join(curves) + "\n")
    (out / "mod.csv").write_text(
        "mod,val_loss_A,val_loss_B,final_train_loss,wall_s\n0,4,4,4,10\n1,4.1,4.1,4.1,8\n"
    )
    lines += ["", "| MoD | A | B | wall |", "|---|---|---|---|", "| off | 1 | 2 | 3 |", "| on | 1 | 2 | 3 |"]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    for name in check_study.PLOTS:
        (out / f"{name}.png").write_bytes(PNG)


def test_complete_folder_passes(tmp_path: Path) -> None:
    complete(tmp_path)
    assert check_study.problems(tmp_path) == []


def test_flags_missing_row_nan_and_plot(tmp_path: Path) -> None:
    complete(tmp_path)
    csv = (tmp_path / "results.csv").read_text().splitlines()
    csv = [line for line in csv if not line.startswith("refined,1,2")]
    csv[1] = csv[1].replace("3.1", "nan")
    (tmp_path / "results.csv").write_text("\n".join(csv) + "\n")
    (tmp_path / "loss.png").write_bytes(b"not a png")
    bad = "\n".join(check_study.problems(tmp_path))
    assert "policy='refined' replay=1 stage=2" in bad
    assert "val_loss_A=nan" in bad
    assert "loss.png" in bad


def test_flags_missing_mod_run(tmp_path: Path) -> None:
    complete(tmp_path)
    (tmp_path / "mod.csv").write_text("mod,val_loss_A,val_loss_B,final_train_loss,wall_s\n0,4,4,4,10\n")
    assert any("MoD off and one on" in b for b in check_study.problems(tmp_path))


def test_flags_missing_curve(tmp_path: Path) -> None:
    complete(tmp_path)
    lines = (tmp_path / "curves.csv").read_text().splitlines()
    (tmp_path / "curves.csv").write_text("\n".join(x for x in lines if not x.startswith("infinite,0")) + "\n")
    assert any("0 points for policy='infinite' replay=0" in b for b in check_study.problems(tmp_path))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--steps", "0"], "--steps: 0: must be >= 2"),
        (["--steps", "-1"], "--steps: -1: must be >= 2"),
        (["--steps", "1"], "--steps: 1: must be >= 2"),
        (["--backend", "socket"], "--backend socket needs a sidecar"),
    ],
)
def test_study_flags_are_refused_before_training(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from rewarm import study

    monkeypatch.delenv("REWARM_SOCKET", raising=False)
    with pytest.raises(SystemExit) as info:
        study.main(["--quick", *args])
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_study_out_that_is_a_file_is_refused_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rewarm import study

    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(SystemExit) as info:
        study.main(["--quick", "--out", str(f)])
    assert info.value.code == 2 and "exists and is not a folder" in capsys.readouterr().err
