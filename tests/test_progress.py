"""Training progress: no bar frames in a log file or pipe, a line every N steps instead."""

from __future__ import annotations

import re

import pytest

from seq2seq.errors import UserError
from seq2seq.progress import duration, progress_bar_wanted

PROGRESS_LINE = re.compile(r"step (\d+)/(\d+)  loss (\d+\.\d{4})  ([\d,]+) tokens/s  elapsed (\d+:\d\d:\d\d)  "
                           r"ETA (\d+:\d\d:\d\d)$")


def test_a_run_with_stderr_in_a_pipe_logs_lines_not_bar_frames(trained_reversal):
    stderr = (trained_reversal / "train.stderr").read_text()
    assert "\r" not in stderr and "it/s]" not in stderr  # no progress bar frames
    log = (trained_reversal / "run" / "train.log").read_text()
    lines = [line for line in log.splitlines() if "seq2seq.progress" in line]
    assert len(lines) >= 3
    steps = []
    for line in lines:
        match = PROGRESS_LINE.search(line)
        assert match, line
        step, total, loss, speed = int(match[1]), int(match[2]), float(match[3]), int(match[4].replace(",", ""))
        assert step % 50 == 0 and step <= total and 0 < loss < 10 and speed > 0
        steps.append(step)
    assert steps == sorted(steps) and steps[0] == 50
    assert float(PROGRESS_LINE.search(lines[-1])[3]) < float(PROGRESS_LINE.search(lines[0])[3])  # it learns


def test_the_bar_setting():
    assert progress_bar_wanted(True) and not progress_bar_wanted(False)
    assert progress_bar_wanted("auto") is False  # pytest's stderr is not a terminal
    with pytest.raises(UserError, match="expected auto, true or false"):
        progress_bar_wanted("sometimes")


def test_durations_read_as_hours_minutes_seconds():
    assert duration(0) == "0:00:00" and duration(59.6) == "0:01:00" and duration(3725) == "1:02:05"
