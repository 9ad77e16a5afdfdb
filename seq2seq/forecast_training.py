"""Training a `Forecaster`: the data module over a weekly series and the LightningModule.

ForecastDataModule reads the series, splits it by time (the last `test_weeks` test, the
`valid_weeks` before them validation, the rest training), fits the scale on the training span
and builds one training example per week of the training span: the filled window before it and
the next `horizon` weeks as targets, masked to observed weeks inside the training span (so
neither validation values nor interpolated ones are ever learnt as truth). Validation scores the
validation span with the rolling-origin protocol of `seq2seq.timeseries`, in the series' units.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from seq2seq.bundle import load_bundle
from seq2seq.datasets import ensure_files
from seq2seq.errors import UserError
from seq2seq.forecasting import MODEL_TYPE, Forecaster
from seq2seq.systems import SkipsNonFiniteSteps, build_optimization, keep_optimization
from seq2seq.timeseries import (BASELINES, SEASON_WEEKS, Split, WeeklySeries, causal_fill, chronological_split,
                                evaluate_span, format_date, read_weekly_csv, rolling_origins, seasonal_naive,
                                span_targets, training_scale)

log = logging.getLogger(__name__)


def tensors(*arrays: np.ndarray) -> list[torch.Tensor]:
    return [torch.as_tensor(a, dtype=torch.float32) for a in arrays]


class ForecastDataModule(L.LightningDataModule):
    def __init__(
        self,
        data_dir: str,
        file: str,
        window: int,
        horizon: int,
        eval_horizon: int = 52,
        season: int = SEASON_WEEKS,
        valid_weeks: int = 104,
        test_weeks: int = 208,
        batch_size: int = 64,
        units: str = "",
        download: str | None = None,
        tokenizer: dict[str, Any] | None = None,  # every data module is handed one; a series has none
        run_dir: str | None = None,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise UserError(f"data.batch_size={batch_size} must be positive")
        if eval_horizon < 1 or season < 1:
            raise UserError(f"task.eval_horizon={eval_horizon} and task.season={season} must be positive")
        self.data_dir, self.file, self.download, self.units = Path(data_dir), file, download, units
        self.window, self.horizon, self.eval_horizon, self.season = window, horizon, eval_horizon, season
        self.valid_weeks, self.test_weeks, self.batch_size = valid_weeks, test_weeks, batch_size
        # History handed to every method: enough for the model's window and a season back.
        self.context = max(window, season)
        self.series: WeeklySeries | None = None
        self.split: Split | None = None
        self.scale: float | None = None
        self.train_set: TensorDataset | None = None
        self.valid_set: TensorDataset | None = None

    @property
    def path(self) -> Path:
        return self.data_dir / self.file

    def prepare_data(self) -> None:
        if self.download is not None:
            ensure_files(self.download, self.data_dir, [self.file])

    def setup(self, stage: str | None = None) -> None:
        if self.series is not None:
            return
        series = read_weekly_csv(self.path)
        split = chronological_split(series, self.valid_weeks, self.test_weeks,
                                    min_train_weeks=self.context + self.horizon)
        if self.eval_horizon > min(self.valid_weeks, self.test_weeks):
            raise UserError(f"task.eval_horizon={self.eval_horizon} is longer than the validation "
                            f"({self.valid_weeks} weeks) or test ({self.test_weeks} weeks) span")
        self.series, self.split, self.scale = series, split, training_scale(series, split)
        values, observed = series.values, series.observed

        # Every week of the training span after the first window is a forecast origin; targets
        # past the training span are masked out rather than dropped, so the last weeks count too.
        origins = np.arange(self.window, split.train_end)
        history, flags = causal_fill(values, observed, origins, self.window)
        targets, mask = span_targets(values, observed, origins, self.horizon, split.train_end)
        self.train_set = TensorDataset(*tensors(history, flags, targets, mask))

        origins = rolling_origins(split.train_end, split.valid_end, self.eval_horizon)
        history, flags = causal_fill(values, observed, origins, self.context)
        targets, mask = span_targets(values, observed, origins, self.eval_horizon, split.valid_end)
        self.valid_set = TensorDataset(*tensors(history, flags, targets, mask))
        sizes = split.sizes
        log.info("%s: %d weeks (%d missing); train %d, validation %d, test %d weeks; %d training windows; "
                 "scale %.4f (std of the training values)", series.source, len(series),
                 int((~observed).sum()), sizes["train"], sizes["valid"], sizes["test"], len(self.train_set),
                 self.scale)
        baselines = self.baselines()
        scores = evaluate_span(series, split.train_end, split.valid_end, self.eval_horizon, self.context, baselines)
        log.info("validation baselines (MAE): %s",
                 ", ".join(f"{name} {s['mae']:.4f}" for name, s in scores.items()))

    def baselines(self) -> dict:
        return {"last value": BASELINES["last value"],
                "seasonal naive": lambda h, f, n: seasonal_naive(h, f, n, season=self.season)}

    def model_arguments(self) -> dict[str, Any]:
        """What the model takes from the data: the scale fitted on the training span."""
        return {"scale": self.scale}

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        if trainer is not None and trainer.world_size > 1:
            sampler = DistributedSampler(self.train_set, trainer.world_size, trainer.global_rank, shuffle=True)
            return DataLoader(self.train_set, batch_size=self.batch_size, sampler=sampler)
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        # Every rank scores the whole (small) validation span, so every rank logs the same figure.
        return DataLoader(self.valid_set, batch_size=256)

    def describe(self) -> dict[str, Any]:
        """Where the data came from and how it was split: kept in the model directory."""
        series, split = self.series, self.split
        spans = {"train": (0, split.train_end), "valid": (split.train_end, split.valid_end),
                 "test": (split.valid_end, split.n)}
        return {
            "data": {"file": str(self.path.resolve()), "name": series.name, "units": self.units,
                     "weeks": len(series),
                     "missing": int((~series.observed).sum())},
            "split": {name: {"weeks": end - start, "first": format_date(series.dates[start]),
                             "last": format_date(series.dates[end - 1])} for name, (start, end) in spans.items()},
            "normalization": {"scale": self.scale, "fitted_on": "observed values of the training span",
                              "centre": "each window's last value"},
            "evaluation": {"protocol": "rolling origin", "horizon": self.eval_horizon, "season": self.season,
                           "context": self.context},
        }


class ForecastSystem(SkipsNonFiniteSteps, L.LightningModule):
    """Trains a `Forecaster` on squared error in units of the scale; validates MAE/RMSE in series units."""

    def __init__(
        self,
        model: Forecaster,
        optimizer: str = "adam",
        lr: float = 3e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.0,
        scheduler: str = "plateau",
        warmup_steps: int = 0,
        plateau_factor: float = 0.5,
        plateau_patience: int = 3,
        min_lr: float = 1e-5,
        label_smoothing: float = 0.0,
        max_nonfinite_steps: int = 20,
        eval_horizon: int = 52,
        season: int = SEASON_WEEKS,
        torch_threads: int | None = 1,
    ) -> None:
        super().__init__()
        if torch_threads is not None and (not isinstance(torch_threads, int) or torch_threads < 1):
            raise UserError(f"task.torch_threads={torch_threads!r} must be a positive whole number or null")
        keep_optimization(self, optimizer, lr, betas, weight_decay, scheduler, warmup_steps, plateau_factor,
                          plateau_patience, min_lr, max_nonfinite_steps)
        if label_smoothing != 0.0:
            raise UserError("optim.label_smoothing must be 0 for a forecaster (it applies to classes)")
        self.model = model
        self.eval_horizon, self.season, self.torch_threads = eval_horizon, season, torch_threads
        self._val_abs = self._val_sq = self._val_count = 0.0

    def setup(self, stage: str) -> None:
        # The model's matrix products are tiny: a second thread saves nothing, and on shared
        # cores the threads wait for each other (CO2 recipe on 2 busy cores, same result:
        # 9 min with 2 threads, 50 s with 1, at a load average of 5-7).
        if self.torch_threads is not None:
            torch.set_num_threads(self.torch_threads)

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

    def configure_optimizers(self):
        return build_optimization(self, monitor="val/mae", mode="min")


def format_table(results: dict[str, dict[str, dict]]) -> str:
    """A Markdown table: one row per protocol and method."""
    rows = ["| protocol | method | MAE | RMSE |", "| --- | --- | --- | --- |"]
    for protocol, methods in results.items():
        rows += [f"| {protocol} | {name} | {s['mae']:.4f} | {s['rmse']:.4f} |" for name, s in methods.items()]
    return "\n".join(rows)


def evaluate_forecaster(model_dir: Path, datamodule: ForecastDataModule, run_dir: Path,
                        device: str | None = None) -> dict[str, Any]:
    """Score the exported model and the baselines on the test span; print a table, write test_scores.json.

    Two protocols, the same code for every method: rolling origin (every test week from which
    `eval_horizon` weeks fit in the span, forecast from the true history before it), and one
    roll-out over the whole test span from the end of validation.
    """
    bundle = load_bundle(model_dir, device=device or "cpu", expected_type=MODEL_TYPE)
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
