"""Forecast with a model directory from Python: the API behind seq2seq-forecast.

    >>> f = Forecaster.load("outputs/run/model")              # doctest: +SKIP
    >>> f.forecast([315.7, 317.5, None, 317.1, ...], horizon=52)  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
import torch

from seq2seq.bundle import Bundle, load_bundle
from seq2seq.errors import UserError
from seq2seq.runtime import pick_device
from seq2seq.tasks import task_named
from seq2seq.tasks.forecasting.model import forecast_from
from seq2seq.tasks.forecasting.series import WeeklySeries

MODEL_TYPE = task_named("forecast").model_type


class Forecaster:
    """A loaded forecaster: an LSTM over the last `window` weeks that forecasts the weeks after them."""

    def __init__(self, bundle: Bundle, device: torch.device) -> None:
        self.bundle = bundle
        self.model = bundle.model
        self.device = device

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device | None = None) -> Forecaster:
        device = pick_device(device)
        return cls(load_bundle(path, device, expected_type=MODEL_TYPE), device)

    @property
    def window(self) -> int:
        """Weeks of history the model reads (a longer history is cut, a shorter one refused)."""
        return self.model.window

    @property
    def default_horizon(self) -> int:
        """The horizon the model was scored on while training (it forecasts further by rolling out)."""
        return int(self.bundle.config.get("evaluation", {}).get("horizon", self.model.horizon))

    @property
    def trained_on(self) -> dict:
        """Where the training series came from (file, name, units), as model.json records it."""
        return dict(self.bundle.config.get("data", {}))

    def forecast(self, values: Sequence[float | None], horizon: int | None = None) -> list[float]:
        """Forecasts of the `horizon` weeks that follow `values`.

        `values` is a weekly history, oldest first, ending the week before the first forecast;
        None or NaN marks a week without a measurement (filled from the weeks before it).
        """
        history = np.array([math.nan if v is None else v for v in values], dtype=np.float64)
        if history.ndim != 1:
            raise UserError("values must be a flat list of numbers (one per week)")
        return self.forecast_series(history, horizon).tolist()

    def forecast_series(self, values: np.ndarray, horizon: int | None = None, origin: int | None = None
                        ) -> np.ndarray:
        """(horizon,) forecasts of weeks origin .. origin+horizon-1 of an (N,) series (NaN = missing),
        from the weeks before `origin` only (default: the week after the series)."""
        if isinstance(values, WeeklySeries):
            values = values.values
        horizon = self.default_horizon if horizon is None else horizon
        if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
            raise UserError(f"horizon={horizon!r} must be a positive whole number")
        origin = len(values) if origin is None else origin
        observed = ~np.isnan(values)
        return forecast_from(self.model, np.where(observed, values, 0.0), observed, origin, horizon)
