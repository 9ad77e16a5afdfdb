"""Weekly series for forecasting: reading, gaps, the chronological split, the scoring protocol.

Missing values. A week with no measurement is an empty value in the file and NaN here. The
forecaster's inputs need a number every week, so gaps in a history are filled by linear
interpolation between the observed values on either side, and a gap that runs up to the
forecast origin is filled with the last observed value: a history is filled from the values
before the origin only, so no forecast ever sees a value from its own future. Each filled week
also carries an `observed` flag (1 measured, 0 filled), which the model reads as a second input.
Interpolated points are never scored as truth: training targets and test targets are masked
to observed weeks. (Interpolation rather than dropping weeks keeps the time axis regular, so
"52 weeks earlier" and a window of W weeks mean the same thing everywhere; the flag and the
target mask keep the made-up values from counting as data.)

Scoring protocol (`rolling_origin`): from every week t of a span at which a whole forecast of
`horizon` weeks fits inside the span, each method forecasts weeks t .. t+horizon-1 from the true
(filled) history before t; MAE and RMSE are taken over every (origin, lead) pair whose target
week was observed. The baselines (`last_value`, `seasonal_naive`) go through the same code.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seq2seq.errors import UserError

WEEK = dt.timedelta(days=7)
DATE_FORMAT = "%Y%m%d"
SEASON_WEEKS = 52


@dataclass
class WeeklySeries:
    """Consecutive weekly values; NaN where the week has no measurement."""

    dates: list[dt.date]
    values: np.ndarray  # (N,) float64
    name: str = "value"
    source: str = ""

    def __len__(self) -> int:
        return len(self.values)

    @property
    def observed(self) -> np.ndarray:
        return ~np.isnan(self.values)  # (N,) bool


def parse_date(text: str, where: str) -> dt.date:
    try:
        return dt.datetime.strptime(text.strip(), DATE_FORMAT).date()
    except ValueError:
        raise UserError(f"{where}: date {text.strip()!r} is not YYYYMMDD") from None


def format_date(date: dt.date) -> str:
    return date.strftime(DATE_FORMAT)


def read_weekly_csv(path: str | os.PathLike) -> WeeklySeries:
    """A `date,<name>` CSV: YYYYMMDD dates one week apart, an empty value for a missing week."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"series file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: not UTF-8 text (byte {error.start})") from None
    rows = list(csv.reader(text.splitlines()))
    if not rows or [cell.strip() for cell in rows[0]][:1] != ["date"] or len(rows[0]) != 2:
        header = ",".join(rows[0]) if rows else ""
        raise UserError(f"{path}: header must be 'date,<value name>' (found {header!r})")
    dates: list[dt.date] = []
    values: list[float] = []
    for number, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        where = f"{path}:{number}"
        if len(row) != 2:
            raise UserError(f"{where}: expected 2 fields (date,value), found {len(row)}")
        date = parse_date(row[0], where)
        cell = row[1].strip()
        try:
            value = float(cell) if cell else math.nan
        except ValueError:
            raise UserError(f"{where}: value {cell!r} is not a number (leave it empty for a missing week)") from None
        if cell and not math.isfinite(value):
            raise UserError(f"{where}: value {cell!r} is not finite (leave it empty for a missing week)")
        if dates and date - dates[-1] != WEEK:
            raise UserError(f"{where}: {format_date(date)} is not one week after {format_date(dates[-1])}; "
                            "the rows must be consecutive weeks, with an empty value for a missing one")
        dates.append(date)
        values.append(value)
    series = WeeklySeries(dates, np.array(values, dtype=np.float64), rows[0][1].strip() or "value", str(path))
    if not series.observed.any():
        raise UserError(f"{path}: no values")
    return series


@dataclass(frozen=True)
class Split:
    """Chronological split by week index: train [0, train_end), valid [train_end, valid_end), test [valid_end, n)."""

    train_end: int
    valid_end: int
    n: int

    @property
    def sizes(self) -> dict[str, int]:
        return {"train": self.train_end, "valid": self.valid_end - self.train_end, "test": self.n - self.valid_end}


def chronological_split(series: WeeklySeries, valid_weeks: int, test_weeks: int, min_train_weeks: int) -> Split:
    """The last `test_weeks` are the test span, the `valid_weeks` before them validation."""
    if valid_weeks < 1 or test_weeks < 1:
        raise UserError(f"valid_weeks={valid_weeks} and test_weeks={test_weeks} must be positive")
    n = len(series)
    train_end = n - valid_weeks - test_weeks
    if train_end < min_train_weeks:
        raise UserError(f"{series.source}: {n} weeks is too short a series: the split needs {valid_weeks} "
                        f"validation + {test_weeks} test weeks and at least {min_train_weeks} training weeks")
    if not series.observed[:train_end].any():
        raise UserError(f"{series.source}: no observed value in the training span")
    return Split(train_end, n - test_weeks, n)


def training_scale(series: WeeklySeries, split: Split) -> float:
    """Standard deviation of the observed training values: fitted on the training span only."""
    train = series.values[: split.train_end]
    scale = float(np.nanstd(train))
    if not scale > 0.0:
        raise UserError(f"{series.source}: the training values are constant; nothing to learn a scale from")
    return scale


def causal_fill(values: np.ndarray, observed: np.ndarray, origins: np.ndarray, length: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """The `length` weeks before each origin, gaps filled from values before that origin only.

    values, observed: (N,) the whole series; origins: (B,) week indices, each >= length.
    Returns filled values (B, length) and observed flags (B, length) as float32 0/1.
    """
    idx = np.flatnonzero(observed)
    filled = np.empty((len(origins), length), dtype=np.float64)
    flags = np.empty((len(origins), length), dtype=np.float32)
    for row, origin in enumerate(origins):
        known = idx[idx < origin]
        if len(known) == 0:
            raise UserError(f"no observed value before week {origin}")
        weeks = np.arange(origin - length, origin)
        # np.interp holds the end values beyond the last known point: the carry-forward of a
        # gap that reaches the origin.
        filled[row] = np.interp(weeks, known, values[known])
        flags[row] = observed[weeks]
    return filled, flags


def span_targets(values: np.ndarray, observed: np.ndarray, origins: np.ndarray, horizon: int, end: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(B, horizon) target values and the mask of those that count: observed and before `end`."""
    weeks = origins[:, None] + np.arange(horizon)[None, :]  # (B, H)
    inside = weeks < end
    safe = np.minimum(weeks, len(values) - 1)
    mask = inside & observed[safe]
    return np.where(mask, values[safe], 0.0), mask


def rolling_origins(start: int, end: int, horizon: int) -> np.ndarray:
    """Every origin in [start, end) from which a forecast of `horizon` weeks stays inside the span."""
    if end - start < horizon:
        raise UserError(f"a span of {end - start} weeks is shorter than the forecast horizon {horizon}")
    return np.arange(start, end - horizon + 1)


# A method: (filled history (B, L), observed flags (B, L), horizon) -> forecasts (B, horizon).
Method = Callable[[np.ndarray, np.ndarray, int], np.ndarray]


def last_value(history: np.ndarray, observed: np.ndarray, horizon: int) -> np.ndarray:
    """Persistence: every week ahead is the last week before the origin."""
    return np.repeat(history[:, -1:], horizon, axis=1)


def seasonal_naive(history: np.ndarray, observed: np.ndarray, horizon: int, season: int = SEASON_WEEKS
                   ) -> np.ndarray:
    """Each week ahead is the value `season` weeks earlier; past one season the last season repeats."""
    if history.shape[1] < season:
        raise UserError(f"the seasonal naive forecast needs {season} weeks of history, got {history.shape[1]}")
    # Lead h (1-based) -> the week h - season before the target, i.e. index L - season + (h - 1) % season.
    lead = np.arange(horizon)
    return history[:, history.shape[1] - season + lead % season]


BASELINES: dict[str, Method] = {"last value": last_value, "seasonal naive": seasonal_naive}


def scores(forecasts: np.ndarray, targets: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """MAE and RMSE over the masked-in (origin, lead) pairs, plus MAE at each lead."""
    errors = np.where(mask, forecasts - targets, 0.0)
    count = int(mask.sum())
    if count == 0:
        raise UserError("no observed week to score in the span")
    per_lead = np.abs(errors).sum(axis=0) / np.maximum(mask.sum(axis=0), 1)
    return {"mae": float(np.abs(errors).sum() / count), "rmse": float(math.sqrt((errors ** 2).sum() / count)),
            "scored": count, "mae_by_lead": [round(float(x), 4) for x in per_lead]}


def evaluate_span(series: WeeklySeries, start: int, end: int, horizon: int, context: int,
                  methods: dict[str, Method]) -> dict[str, dict]:
    """Rolling-origin scores of each method over weeks [start, end) of the series."""
    origins = rolling_origins(start, end, horizon)
    if origins[0] < context:
        raise UserError(f"the first forecast origin (week {origins[0]}) has less than {context} weeks of history")
    history, flags = causal_fill(series.values, series.observed, origins, context)
    targets, mask = span_targets(series.values, series.observed, origins, horizon, end)
    return {name: scores(method(history, flags, horizon), targets, mask) for name, method in methods.items()}
