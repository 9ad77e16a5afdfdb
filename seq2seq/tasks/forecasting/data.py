"""ForecastDataModule: a weekly series read, split by time (the last `test_weeks` test, the
`valid_weeks` before them validation, the rest training), windows of history and targets."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from seq2seq.datasets import ensure_files
from seq2seq.errors import UserError
from seq2seq.tasks.forecasting.series import (
    BASELINES,
    SEASON_WEEKS,
    Split,
    WeeklySeries,
    causal_fill,
    chronological_split,
    evaluate_span,
    format_date,
    read_weekly_csv,
    rolling_origins,
    seasonal_naive,
    span_targets,
    training_scale,
)

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
