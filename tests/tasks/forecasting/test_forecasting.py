"""Forecasting: gaps, the chronological split, training-only normalization, the baselines, and
seq2seq-train / seq2seq-forecast end to end on a noisy seasonal series with gaps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from seq2seq import Forecaster
from seq2seq.bundle import load_bundle
from seq2seq.errors import UserError
from seq2seq.tasks import task_named
from seq2seq.tasks.forecasting.data import ForecastDataModule
from seq2seq.tasks.forecasting.model import LSTMForecaster, forecast_from
from seq2seq.tasks.forecasting.series import (
    causal_fill,
    chronological_split,
    last_value,
    read_weekly_csv,
    scores,
    seasonal_naive,
    span_targets,
)
from seq2seq.tasks.forecasting.system import ForecastSystem
from seq2seq.training import Optimization
from tests.helpers import TINY_FORECAST, compose_train, noisy_seasonal_series, run, run_in_process, write_series


# ----------------------------------------------------------------------------- data
def test_split_sizes_are_counted_from_the_end(tmp_path):
    series = read_weekly_csv(write_series(tmp_path / "s.csv", np.arange(2284.0)))
    split = chronological_split(series, valid_weeks=104, test_weeks=208, min_train_weeks=156)
    assert split.sizes == {"train": 1972, "valid": 104, "test": 208}
    assert (split.train_end, split.valid_end, split.n) == (1972, 2076, 2284)
    with pytest.raises(UserError, match="too short a series"):
        chronological_split(series, valid_weeks=104, test_weeks=2100, min_train_weeks=156)


def test_too_short_a_series_is_refused_before_training(tmp_path):
    write_series(tmp_path / "short.csv", np.arange(200.0))
    dm = ForecastDataModule(str(tmp_path), "short.csv", window=104, horizon=52, valid_weeks=104, test_weeks=208)
    with pytest.raises(UserError, match="short.csv: 200 weeks is too short a series"):
        dm.setup()


def test_scale_is_fitted_on_the_training_span_only(tmp_path):
    values = noisy_seasonal_series(400)
    values[-60:] += 1000.0  # a wild validation/test span must not move the scale
    write_series(tmp_path / "s.csv", values)
    dm = ForecastDataModule(str(tmp_path), "s.csv", window=52, horizon=13, eval_horizon=13,
                            valid_weeks=20, test_weeks=40)
    dm.setup()
    assert dm.scale == pytest.approx(float(np.nanstd(values[:340])))
    assert dm.describe()["split"]["train"] == {"weeks": 340, "first": "19900106", "last": "19960706"}
    assert dm.describe()["split"]["test"]["weeks"] == 40
    # No training target comes from the validation span or from a missing week.
    history, flags, targets, mask = dm.train_set.tensors
    origins = np.arange(52, 340)
    weeks = origins[:, None] + np.arange(13)[None, :]
    expected = (weeks < 340) & ~np.isnan(values[np.minimum(weeks, 399)])
    assert torch.equal(mask.bool(), torch.as_tensor(expected))
    assert float(targets[mask.bool()].max()) < 400.0


def test_gaps_are_filled_from_the_past_only():
    values = np.array([0.0, 1.0, np.nan, np.nan, 4.0, 5.0, np.nan, np.nan, 8.0])
    observed = ~np.isnan(values)
    filled, flags = causal_fill(values, observed, np.array([6, 9]), length=6)
    # Origin 6: weeks 0-5, the gap at 2-3 interpolated between 1 and 4.
    assert filled[0].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert flags[0].tolist() == [1, 1, 0, 0, 1, 1]
    # Origin 9: weeks 3-8, the gap at 6-7 interpolated towards week 8 (before the origin).
    assert filled[1].tolist() == [3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    # Origin 8: the gap runs up to the origin, so it holds the last observed value (5), never 8.
    filled, _ = causal_fill(values, observed, np.array([8]), length=4)
    assert filled[0].tolist() == [4.0, 5.0, 5.0, 5.0]


def test_interpolated_weeks_are_never_scored():
    values = np.array([1.0, 2.0, np.nan, 4.0, np.nan, 6.0, 7.0, 8.0])
    observed = ~np.isnan(values)
    targets, mask = span_targets(values, observed, np.array([1, 3]), horizon=4, end=7)
    assert mask.tolist() == [[True, False, True, False], [True, False, True, True]]
    good = np.where(mask, targets, 0.0) + 0.5
    wild = np.where(mask, good, 1e6)  # anything at an unscored week changes nothing
    assert scores(good, targets, mask)["mae"] == pytest.approx(0.5)
    assert scores(wild, targets, mask) == scores(good, targets, mask)
    assert scores(good, targets, mask)["scored"] == 5


def test_baselines():
    history = np.arange(104.0)[None, :]
    flags = np.ones_like(history)
    assert last_value(history, flags, 3).tolist() == [[103.0, 103.0, 103.0]]
    naive = seasonal_naive(history, flags, 106)
    # Lead h forecasts the week 52 before its target; past 52 weeks the last season repeats.
    assert naive[0, :2].tolist() == [52.0, 53.0]
    assert naive[0, 51] == 103.0 and naive[0, 52] == 52.0 and naive[0, 105] == 53.0


def test_a_forecast_reads_nothing_from_its_future():
    torch.manual_seed(0)
    model = LSTMForecaster(window=20, horizon=5, hidden_size=8, num_layers=1, scale=2.0)
    values = noisy_seasonal_series(80)
    values[57:60] = np.nan  # a gap up to the origin: interpolating it would pull in week 60
    before = forecast_from(model, values, ~np.isnan(values), origin=60, steps=12)
    changed = values.copy()
    changed[60:] = 1e4
    assert np.array_equal(before, forecast_from(model, changed, ~np.isnan(changed), origin=60, steps=12))
    assert before.shape == (12,)


@pytest.mark.parametrize("content, message", [
    ("when,level\n19900106,1\n", "header must be 'date,<value name>'"),
    ("date,level\n19900106,1\n1990-01-13,2\n", "date '1990-01-13' is not YYYYMMDD"),
    ("date,level\n19900106,1\n19900113,abc\n", "value 'abc' is not a number"),
    ("date,level\n19900106,1\n19900120,2\n", "is not one week after 19900106"),
    ("date,level\n19900106,1\n19900113,inf\n", "is not finite"),
    ("date,level\n19900106,\n", "no values"),
])
def test_bad_series_files_are_refused_in_one_line(tmp_path, content, message):
    (tmp_path / "bad.csv").write_text(content, encoding="utf-8")
    with pytest.raises(UserError, match=message.replace("(", r"\(")) as error:
        read_weekly_csv(tmp_path / "bad.csv")
    assert "\n" not in str(error.value)


def test_the_recipe_composes_with_the_split_and_metric_it_promises(tmp_path):
    cfg = compose_train(["experiment=co2_forecast", f"paths.data_root={tmp_path}",
                         "hydra.runtime.output_dir=" + str(tmp_path / "run")])
    datamodule = instantiate(cfg.data, tokenizer=OmegaConf.to_container(cfg.tokenizer, resolve=True),
                             _convert_="all")
    assert (datamodule.valid_weeks, datamodule.test_weeks) == (104, 208)
    assert datamodule.path == tmp_path / "co2_maunaloa" / "co2.csv" and datamodule.download == "co2_maunaloa"
    model = instantiate(cfg.model, scale=14.0)
    assert (model.window, model.horizon) == (datamodule.window, datamodule.horizon) == (104, 52)
    task = OmegaConf.to_container(cfg.task, resolve=True)
    optimization = Optimization(**OmegaConf.to_container(cfg.optim, resolve=True))
    system = task_named(task.pop("name")).system()(model, optimization, **task)
    assert isinstance(system, ForecastSystem) and system.eval_horizon == datamodule.eval_horizon == 52
    assert cfg.callbacks.model_checkpoint.monitor == task_named("forecast").monitor == "val/mae"
    assert cfg.callbacks.early_stopping.monitor == "val/mae" and cfg.callbacks.model_checkpoint.mode == "min"


# ----------------------------------------------------------------------- end to end
def train_forecaster(work: Path) -> None:
    write_series(work / "sine.csv", noisy_seasonal_series(400, seed=1))
    result = run(["seq2seq-train", *TINY_FORECAST, "hydra.run.dir=run"], cwd=work)
    assert "model written to" in result.stdout


@pytest.fixture(scope="module")
def sine_run(build_once) -> Path:
    return build_once("forecaster", train_forecaster)


def test_training_beats_both_baselines_on_a_noisy_seasonal_series(sine_run):
    report = json.loads((sine_run / "run" / "test_scores.json").read_text())
    assert report["test_span"] == {"first": "19950909", "last": "19970830", "weeks": 104}
    rolling = report["protocols"]["rolling origin, 26 weeks ahead"]
    lstm, persistence, seasonal = rolling["LSTM"], rolling["last value"], rolling["seasonal naive"]
    # Seasonal naive is off by a year of trend (0.03 x 52 = 1.56); last value by the season.
    assert seasonal["mae"] == pytest.approx(1.56, abs=0.1)
    assert persistence["mae"] > 2.0
    assert lstm["mae"] < 0.5 and lstm["rmse"] < 0.6
    rollout = report["protocols"]["one roll-out of 104 weeks"]
    assert rollout["LSTM"]["mae"] < min(rollout["last value"]["mae"], rollout["seasonal naive"]["mae"])
    # The model directory carries the scale fitted on the 244 training weeks only.
    values = read_weekly_csv(sine_run / "sine.csv").values
    bundle = load_bundle(sine_run / "run" / "model", expected_type="forecaster")
    assert bundle.model.scale == pytest.approx(float(np.nanstd(values[:244])))
    assert bundle.config["split"]["train"]["weeks"] == 244


def test_forecast_cli_writes_a_csv_and_a_plot(sine_run):
    model = sine_run / "run" / "model"
    result = run(["seq2seq-forecast", f"model={model}", "horizon=30", "output=out/f.csv", "plot=out/f.png"],
                 cwd=sine_run)
    lines = (sine_run / "out" / "f.csv").read_text().splitlines()
    assert lines[0] == "date,forecast" and len(lines) == 31
    assert lines[1].startswith("19970906,") and lines[30].startswith("19980328,")
    assert (sine_run / "out" / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result.stdout == ""
    # From inside the series the truth is known: the error goes to stderr, the CSV to stdout.
    inside = run(["seq2seq-forecast", f"model={model}", "origin=19950909", "horizon=26"], cwd=sine_run)
    assert len(inside.stdout.splitlines()) == 27
    assert "MAE against the" in inside.stderr


def test_python_api_forecasts_as_the_command_does(sine_run):
    forecaster = Forecaster.load(sine_run / "run" / "model")
    lines = run(["seq2seq-forecast", "model=run/model", "horizon=30"], cwd=sine_run).stdout.splitlines()[1:]
    from_command = [float(line.split(",")[1]) for line in lines]
    values = read_weekly_csv(sine_run / "sine.csv").values
    history = [None if np.isnan(v) else float(v) for v in values]
    from_api = forecaster.forecast(history, horizon=30)
    assert len(from_api) == 30 and from_api == pytest.approx(from_command, abs=1e-4)
    # A missing week is filled from the weeks before it, not read as zero.
    history[-1] = None
    assert abs(forecaster.forecast(history, horizon=1)[0] - from_api[0]) < 1.0
    assert forecaster.window == 52 and forecaster.default_horizon == 26
    with pytest.raises(UserError, match="horizon=0 must be a positive"):
        forecaster.forecast(history, horizon=0)
    with pytest.raises(UserError, match="weeks of history"):
        forecaster.forecast(history[:10], horizon=3)


@pytest.mark.parametrize("command, message", [
    (["seq2seq-forecast", "model=run/model", "data=bad.csv", "output=out.csv"], "header must be"),
    (["seq2seq-forecast", "model=run/model", "origin=19950910", "output=out.csv"], "is not one of the series' weeks"),
    (["seq2seq-forecast", "model=run/model", "horizon=0", "output=out.csv"], "horizon=0 must be a positive"),
    (["seq2seq-forecast", "model=run", "output=out.csv"], "no model.json"),
])
def test_bad_input_exits_2_with_one_line(sine_run, command, message):
    (sine_run / "bad.csv").write_text("day,level\n19900106,1\n", encoding="utf-8")
    result = run_in_process(command, cwd=sine_run)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
    assert message in result.stderr and not (sine_run / "out.csv").exists()
    assert "Traceback" not in result.stderr
