"""Pictures the commands write: attention heatmaps and forecasts (matplotlib, imported on first use)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from seq2seq.errors import UserError
from seq2seq.tasks.forecasting.series import WeeklySeries, format_date


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    return plt


def save_attention(src_pieces: list[str], tgt_pieces: list[str], source: str, hyp, stem: Path) -> None:
    """A heatmap PNG (target pieces down, source pieces across) and the alignment as JSON.

    `hyp` is a translation with `.text` and `.attention` (target pieces + EOS, source pieces).
    """
    plt = pyplot()
    src_pieces = src_pieces or ["<empty>"]
    tgt_pieces = tgt_pieces + ["</s>"]
    weights = hyp.attention[: len(tgt_pieces), : len(src_pieces)].tolist()
    stem.with_suffix(".json").write_text(json.dumps(
        {"source": source, "translation": hyp.text, "source_pieces": src_pieces,
         "target_pieces": tgt_pieces, "attention": weights}, ensure_ascii=False) + "\n", encoding="utf-8")
    fig, ax = plt.subplots(figsize=(max(4, 0.4 * len(src_pieces) + 2), max(3, 0.35 * len(tgt_pieces) + 1.5)))
    ax.imshow(weights, cmap="Greys", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(src_pieces)), src_pieces, rotation=90)
    ax.set_yticks(range(len(tgt_pieces)), tgt_pieces)
    ax.set_xlabel("source")
    ax.set_ylabel("translation")
    fig.tight_layout()
    fig.savefig(stem.with_suffix(".png"), dpi=100)
    plt.close(fig)


def write_plot(path: str, series: WeeklySeries, origin: int, dates: list, forecasts: np.ndarray,
               history_weeks: int, units: str) -> None:
    plt = pyplot()

    start = max(0, origin - history_weeks)
    history_dates = series.dates[start:origin]
    figure, axes = plt.subplots(figsize=(10, 4.5))
    axes.plot(history_dates, series.values[start:origin], color="black", linewidth=1, label="history")
    truth_end = min(len(series), origin + len(forecasts))
    if truth_end > origin:
        axes.plot(series.dates[origin:truth_end], series.values[origin:truth_end], color="tab:green",
                  linewidth=1, label="truth")
    axes.plot(dates, forecasts, color="tab:red", linewidth=1.5, label="forecast")
    axes.axvline(dates[0], color="grey", linestyle=":", linewidth=1)
    axes.set_ylabel(f"{series.name} ({units})" if units else series.name)
    axes.set_title(f"{len(forecasts)}-week forecast from {format_date(dates[0])}")
    axes.legend(loc="upper left")
    axes.grid(alpha=0.3)
    figure.autofmt_xdate()
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".png")
        os.close(handle)
        figure.savefig(partial, dpi=100, format="png")
        os.replace(partial, target)
    except OSError as error:
        raise UserError(f"plot={path}: cannot write there ({error.strerror or error})") from None
    finally:
        plt.close(figure)
