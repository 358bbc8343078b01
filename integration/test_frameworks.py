"""HF Trainer and Lightning drive a wrapped optimizer through opt.lr_scheduler:
every update uses the closed-form rate, once, and the framework's own view of
the LR agrees."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

import rewarm

PEAK, W, T = 1e-3, 3, 20
SPEC = {"kind": "cosine", "peak_lr": PEAK, "warmup_steps": W, "total_steps": T}
STEPS = 24  # past T: the floor


def closed_form(n: int) -> float:
    if n < W:
        return PEAK * n / W
    if n <= T:
        return PEAK * 0.5 * (1 + math.cos(math.pi * (n - W) / (T - W)))
    return 0.0


class RecordingAdamW(torch.optim.AdamW):
    """Records the LR each real update ran with."""

    def __init__(self, params, **kw) -> None:  # type: ignore[no-untyped-def]
        super().__init__(params, **kw)
        self.used: list[float] = []

    def step(self, closure=None):  # type: ignore[no-untyped-def, override]
        self.used.append(self.param_groups[0]["lr"])
        return super().step(closure)


def check(used: list[float]) -> None:
    assert len(used) == STEPS
    for n, lr in enumerate(used):
        assert math.isclose(lr, closed_form(n), rel_tol=1e-12, abs_tol=1e-18), (n, lr, closed_form(n))


class Regressor(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(8, 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss": torch.nn.functional.mse_loss(self.lin(x).squeeze(-1), y)}


class LogLR(TrainerCallback):
    def __init__(self) -> None:
        self.logged: list[float] = []

    def on_log(self, args, state, control, logs=None, **kw):  # type: ignore[no-untyped-def]
        if logs and "learning_rate" in logs:
            self.logged.append(float(logs["learning_rate"]))


@pytest.mark.parametrize("accumulation", [1, 2])
def test_hf_trainer(tmp_path: Path, accumulation: int) -> None:
    torch.manual_seed(0)
    model = Regressor()
    inner = RecordingAdamW(model.parameters())
    opt = rewarm.wrap(inner, schedule=SPEC, backend="inprocess")
    data = [{"x": torch.randn(8), "y": torch.randn(())} for _ in range(4 * accumulation * STEPS)]
    args = TrainingArguments(
        str(tmp_path),
        max_steps=STEPS,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=accumulation,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
    )
    log = LogLR()
    Trainer(
        model=model, args=args, train_dataset=data, optimizers=(opt, opt.lr_scheduler), callbacks=[log]
    ).train()
    check(inner.used)
    # HF reads the scheduler's last LR before each update and logs it with
    # that update: the rate the update used.
    assert len(log.logged) == STEPS
    for n, lr in enumerate(log.logged):
        assert math.isclose(lr, closed_form(n), rel_tol=1e-9, abs_tol=1e-15), (n, lr)


class LitRegressor(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(8, 1)
        self.inner: RecordingAdamW | None = None

    def training_step(self, batch, i):  # type: ignore[no-untyped-def]
        x, y = batch
        return torch.nn.functional.mse_loss(self.lin(x).squeeze(-1), y)

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        self.inner = RecordingAdamW(self.parameters())
        opt = rewarm.wrap(self.inner, schedule=SPEC, backend="inprocess")
        return {"optimizer": opt, "lr_scheduler": {"scheduler": opt.lr_scheduler, "interval": "step"}}


def test_lightning(tmp_path: Path) -> None:
    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(4 * STEPS, 8), torch.randn(4 * STEPS))
    m = LitRegressor()
    L.Trainer(
        max_steps=STEPS,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    ).fit(m, torch.utils.data.DataLoader(data, batch_size=4))
    assert m.inner is not None
    check(m.inner.used)
