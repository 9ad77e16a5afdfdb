"""seq2seq-forecast: forecast a weekly series with a trained forecaster; a CSV and a picture.

    seq2seq-forecast model=outputs/.../model horizon=104 output=forecast.csv plot=forecast.png
    seq2seq-forecast model=outputs/.../model origin=19980103 horizon=208 plot=test.png

By default the forecast starts the week after the series ends; `origin=YYYYMMDD` starts it at a
week inside the series instead, from the weeks before it only, and the plot then shows the true
values beside the forecast (and their MAE goes to stderr). The CSV has a `date,forecast` header
and one row per week, dates as YYYYMMDD like the input.
"""

from __future__ import annotations

import logging
import sys

import numpy as np
from omegaconf import DictConfig

from seq2seq.command import hydra_command, run_as_command
from seq2seq.config import APPS_CONF_DIR
from seq2seq.errors import UserError
from seq2seq.tasks.forecasting.series import (
    WEEK,
    WeeklySeries,
    format_date,
    parse_date,
    read_weekly_csv,
)
from seq2seq.text import open_output


def origin_index(series: WeeklySeries, origin) -> int:
    """Week index of the first forecast week: the week after the data, or a YYYYMMDD inside it."""
    if origin is None:
        return len(series)
    date = parse_date(str(origin), "origin")
    offset = (date - series.dates[0]).days
    if offset % 7 or not 0 <= offset // 7 <= len(series):
        raise UserError(f"origin={origin} is not one of the series' weeks ({format_date(series.dates[0])}, "
                        f"{format_date(series.dates[0] + WEEK)}, ... {format_date(series.dates[-1] + WEEK)})")
    return offset // 7


def positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{name}={value!r} must be a positive whole number")
    return value


@run_as_command
def forecast(cfg: DictConfig) -> None:
    if cfg.model is None:
        raise UserError("model= is required: the path of a forecaster directory (a run's 'model' folder)")
    from seq2seq.plots import write_plot
    from seq2seq.tasks.forecasting.api import Forecaster

    forecaster = Forecaster.load(cfg.model, device=cfg.device)
    trained_on = forecaster.trained_on
    data = cfg.data or trained_on.get("file")
    if not data:
        raise UserError("data= is required: the model directory does not say which series it was trained on")
    series = read_weekly_csv(data)
    horizon = positive_int(cfg.horizon if cfg.horizon is not None else forecaster.default_horizon, "horizon")
    origin = origin_index(series, cfg.origin)
    forecasts = forecaster.forecast_series(series.values, horizon, origin)
    dates = [series.dates[0] + WEEK * (origin + step) for step in range(horizon)]
    with open_output(cfg.output) as out:
        out.write("date,forecast\n")
        out.writelines(f"{format_date(d)},{v:.4f}\n" for d, v in zip(dates, forecasts))
    known = series.observed[origin:origin + horizon]
    if known.any():
        truth = series.values[origin:origin + horizon]
        error = np.abs(forecasts[: len(truth)][known] - truth[known]).mean()
        print(f"MAE against the {int(known.sum())} observed weeks of the forecast: {error:.4f}", file=sys.stderr)
    if cfg.plot:
        write_plot(cfg.plot, series, origin, dates, forecasts, positive_int(cfg.plot_history, "plot_history"),
                   trained_on.get("units", ""))


@hydra_command(APPS_CONF_DIR, "forecast")
def main(cfg: DictConfig) -> None:
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    forecast(cfg)


if __name__ == "__main__":
    main()
