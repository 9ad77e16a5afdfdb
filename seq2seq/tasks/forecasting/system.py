"""ForecastSystem: the LightningModule that trains an `LSTMForecaster`, and what the training
run calls for this task (build, export, the test report).

Training examples are masked to observed weeks inside the training span (the data module), so
neither validation values nor interpolated ones are ever learnt as truth. Validation scores the
validation span with the rolling-origin protocol of `seq2seq.tasks.forecasting.series`, in the
series' units."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from seq2seq.bundle import load_bundle
from seq2seq.config import build
from seq2seq.errors import UserError
from seq2seq.runtime import evaluation_device
from seq2seq.tasks.forecasting.data import ForecastDataModule
from seq2seq.tasks.forecasting.model import MODEL_TYPE, LSTMForecaster
from seq2seq.tasks.forecasting.series import SEASON_WEEKS, evaluate_span, format_date
from seq2seq.training import Optimization, TaskSystem

log = logging.getLogger(__name__)


class ForecastSystem(TaskSystem):
    """Trains an `LSTMForecaster` on squared error in units of the scale; validates MAE/RMSE in series units."""

    task_name = "forecast"

    def __init__(
        self,
        model: LSTMForecaster,
        optimization: Optimization | None = None,
        eval_horizon: int = 52,
        season: int = SEASON_WEEKS,
        torch_threads: int | None = 1,
    ) -> None:
        super().__init__(model, optimization)
        if torch_threads is not None and (not isinstance(torch_threads, int) or torch_threads < 1):
            raise UserError(f"task.torch_threads={torch_threads!r} must be a positive whole number or null")
        self.eval_horizon, self.season, self.torch_threads = eval_horizon, season, torch_threads
        self._val_abs = self._val_sq = self._val_count = 0.0

    def setup(self, stage: str) -> None:
        # The model's matrix products are tiny: a second thread saves nothing, and on shared
        # cores the threads wait for each other, which can make training many times slower
        # (recipes/co2_forecast/README.md, "Results").
        if self.torch_threads is not None:
            torch.set_num_threads(self.torch_threads)

    progress_unit = "values"

    def tokens_in(self, batch) -> int:
        """Target values of a training batch (the mask's ones), for the progress log's throughput."""
        return int(batch[3].sum())

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        history, flags, targets, mask = batch
        forecasts = self.model(history, flags)  # (B, horizon)
        errors = (forecasts - targets) / self.model.scale * mask
        loss = (errors ** 2).sum() / mask.sum().clamp(min=1.0)
        self.log("train/loss", loss, prog_bar=True, batch_size=int(mask.sum()))
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val_abs = self._val_sq = self._val_count = 0.0

    def validation_step(self, batch, batch_idx: int) -> None:
        history, flags, targets, mask = batch
        window = self.model.window
        forecasts = self.model.roll_out(history[:, -window:], flags[:, -window:], self.eval_horizon)
        errors = (forecasts.double() - targets.double()) * mask
        self._val_abs += float(errors.abs().sum())
        self._val_sq += float((errors ** 2).sum())
        self._val_count += float(mask.sum())

    def on_validation_epoch_end(self) -> None:
        count = max(self._val_count, 1.0)
        mae, rmse = self._val_abs / count, (self._val_sq / count) ** 0.5
        self.log("val/mae", mae, prog_bar=True)
        self.log("val/rmse", rmse)
        if self.trainer.is_global_zero and not self.trainer.sanity_checking:
            log.info("epoch %d step %d: validation MAE %.4f RMSE %.4f", self.current_epoch, self.global_step,
                     mae, rmse)



# ----------------------------------------------------------------- what the training run calls
def build_model(cfg: DictConfig, datamodule: ForecastDataModule) -> LSTMForecaster:
    # The model carries the scale fitted on the training span.
    datamodule.prepare_data()
    datamodule.setup("fit")
    return build(cfg.model, **datamodule.model_arguments())


def export_contents(datamodule: ForecastDataModule, cfg: DictConfig) -> tuple[dict, dict]:
    """Tokenizer files (none) and model.json extras of the exported model directory."""
    return {}, datamodule.describe()


def format_table(results: dict[str, dict[str, dict]]) -> str:
    """A Markdown table: one row per protocol and method."""
    rows = ["| protocol | method | MAE | RMSE |", "| --- | --- | --- | --- |"]
    for protocol, methods in results.items():
        rows += [f"| {protocol} | {name} | {s['mae']:.4f} | {s['rmse']:.4f} |" for name, s in methods.items()]
    return "\n".join(rows)


def evaluate_test(model_dir: Path, datamodule: ForecastDataModule, cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Score the exported model and the baselines on the test span; print a table, write test_scores.json.

    Two protocols, the same code for every method: rolling origin (every test week from which
    `eval_horizon` weeks fit in the span, forecast from the true history before it), and one
    roll-out over the whole test span from the end of validation.
    """
    bundle = load_bundle(model_dir, device=evaluation_device(cfg.trainer) or "cpu", expected_type=MODEL_TYPE)
    series, split = datamodule.series, datamodule.split
    methods = {"LSTM": bundle.model.forecast, **datamodule.baselines()}
    horizon, test_weeks = datamodule.eval_horizon, split.n - split.valid_end
    results = {
        f"rolling origin, {horizon} weeks ahead": evaluate_span(series, split.valid_end, split.n, horizon,
                                                                datamodule.context, methods),
        f"one roll-out of {test_weeks} weeks": evaluate_span(series, split.valid_end, split.n, test_weeks,
                                                             datamodule.context, methods),
    }
    first, last = format_date(series.dates[split.valid_end]), format_date(series.dates[-1])
    units = datamodule.units or "the series' units"
    report = {"test_span": {"first": first, "last": last, "weeks": test_weeks}, "units": units,
              "protocols": results}
    (run_dir / "test_scores.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nTest span {first}-{last} ({test_weeks} weeks), MAE and RMSE in {units}:")
    print(format_table(results))
    return report
