"""End to end: seq2seq-train a character LM on a patterned text, then generate and evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from seq2seq import Generator
from tests.helpers import ALPHABET, BIN, PATTERN_TEXT, TINY_CHAR_LM, LineDriver, Terminal, run, run_in_process


def train_pattern_lm(work: Path) -> None:
    (work / "text.txt").write_text(PATTERN_TEXT, encoding="utf-8")
    result = run(["seq2seq-train", *TINY_CHAR_LM, "hydra.run.dir=run"], cwd=work)
    assert "model written to" in result.stdout


@pytest.fixture(scope="module")
def pattern_run(build_once) -> Path:
    return build_once("pattern-lm", train_pattern_lm)


def test_training_logs_samples_and_scores_the_held_out_text(pattern_run):
    log = (pattern_run / "run" / "train.log").read_text(encoding="utf-8")
    assert "sample at step 20" in log
    assert "nats/char" in log
    scores = json.loads((pattern_run / "run" / "valid_scores.json").read_text())
    assert scores["chars"] == len(PATTERN_TEXT) - int(len(PATTERN_TEXT) * 0.9) - 1
    assert scores["nats_per_char"] < 0.2  # the pattern is learnt (uniform guessing: ln 27 = 3.3)


def test_generate_cli_continues_the_pattern(pattern_run):
    model = pattern_run / "run" / "model"
    result = run(["seq2seq-generate", f"model={model}", "prompt=abcdefg", "max_chars=60", "greedy=true"],
                 cwd=pattern_run)
    assert result.stdout == "abcdefg" + (ALPHABET[7:] + "\n" + ALPHABET + "\n" + ALPHABET)[:60] + "\n"
    # Sampling (prompt from stdin, so it can hold a line break): whole lines follow the pattern.
    sampled = run(["seq2seq-generate", f"model={model}", "max_chars=200", "temperature=0.5", "seed=1",
                   "stop=\\n\\n"], cwd=pattern_run, input="xyz\nabc")
    lines = sampled.stdout.split("\n")
    assert lines[0] == "xyz" and lines[1] == ALPHABET and len(lines) > 5
    assert all(line == ALPHABET for line in lines[2:-2])  # the last line is cut short by max_chars


def test_generate_cli_takes_any_prompt_as_typed(pattern_run):
    model = pattern_run / "run" / "model"
    prompt = "ROMEO: it's, [a] {b} = ${c} \\ Müller 😀 \"x\""
    result = run(["seq2seq-generate", f"model={model}", f"prompt={prompt}", "max_chars=5", "greedy=true",
                  "stop=never, here", "stop=nor: 'this'"], cwd=pattern_run)
    assert result.stdout.startswith(prompt) and len(result.stdout) == len(prompt) + 5 + 1
    wrong = run(["seq2seq-generate", f"model={model}", "max_chars=5,6"], cwd=pattern_run, check=False)
    assert wrong.returncode == 2
    assert wrong.stderr.count("\n") == 1 and "'max_chars=\"5,6\"'" in wrong.stderr


def test_generate_cli_samples_several_and_reads_the_prompt_from_stdin(pattern_run):
    model = pattern_run / "run" / "model"
    result = run(["seq2seq-generate", f"model={model}", "max_chars=30", "num_samples=3", "seed=2",
                  "greedy=true"], cwd=pattern_run, input="z\nabcdefg")
    samples = result.stdout.split("--- sample ")[1:]
    assert len(samples) == 3
    assert all(s.split("\n", 1)[1].startswith("z\nabcdefghijklmnopqrstuvwxyz\nabc") for s in samples)


def test_python_api_matches_the_cli(pattern_run):
    generator = Generator.load(pattern_run / "run" / "model", device="cpu")
    assert generator.generate("abcdefg", max_chars=20, greedy=True) == "hijklmnopqrstuvwxyz\n"
    assert generator.generate("xyz", max_chars=30, greedy=True, stop="\n") == ""


def test_evaluate_cli_reports_nats_and_bits_per_char(pattern_run):
    model = pattern_run / "run" / "model"
    (pattern_run / "held_out.txt").write_text((ALPHABET + "\n") * 20, encoding="utf-8")
    result = run(["seq2seq-evaluate", f"model={model}", "text=held_out.txt", "json=scores.json"], cwd=pattern_run)
    scores = json.loads((pattern_run / "scores.json").read_text())
    assert scores["chars"] == 27 * 20 - 1
    assert scores["bits_per_char"] == pytest.approx(scores["nats_per_char"] / 0.6931471805599453)
    assert f"{scores['nats_per_char']:.4f}" in result.stdout
    assert scores["nats_per_char"] < 0.2


@pytest.mark.parametrize("args, message", [
    (["prompt=a", "top_p=1.5"], "top_p=1.5 must be in (0, 1]"),
    (["prompt=a", "temperature=-1"], "temperature=-1"),
    (["prompt=a", "num_samples=0"], "num_samples=0"),
])
def test_generate_cli_user_errors(pattern_run, args, message):
    model = pattern_run / "run" / "model"
    result = run_in_process(["seq2seq-generate", f"model={model}", *args], cwd=pattern_run)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {result.stderr.strip()[7:]}"]
    assert message in result.stderr and "Traceback" not in result.stderr


def test_commands_refuse_a_model_of_the_other_kind(pattern_run, trained_reversal):
    lm, translator = pattern_run / "run" / "model", trained_reversal / "run" / "model"
    wrong = run_in_process(["seq2seq-generate", f"model={translator}", "prompt=a"], cwd=pattern_run)
    assert wrong.returncode == 2 and "needs a lstm_lm model" in wrong.stderr
    wrong = run_in_process(["seq2seq-translate", f"model={lm}", "input=-"], cwd=pattern_run, input="abc\n")
    assert wrong.returncode == 2 and "needs a seq2seq model" in wrong.stderr
    wrong = run_in_process(["seq2seq-evaluate", f"model={lm}", "src=a", "ref=b"], cwd=pattern_run)
    assert wrong.returncode == 2 and "language model: score it with text=" in wrong.stderr


def test_interactive_generation(pattern_run, tmp_path):
    model = pattern_run / "run" / "model"
    term = Terminal([str(BIN / "seq2seq-generate"), f"model={model}", "max_chars=10"], tmp_path)
    term.expect("> ")
    term.send(":greedy on\n")
    term.expect("greedy=True")
    term.send("abc\n")
    term.expect("abcdefghijklm")
    term.send(":max_chars 3\n")
    term.expect("max_chars=3")
    term.send("pqr\n")
    term.expect("pqrstu")
    term.send(":greedy off\n")
    term.expect("greedy=False")
    term.send(":top_p 7\n")
    term.expect("top_p=7")
    term.send("abc\n")
    term.expect("error: top_p=7.0 must be in (0, 1]")  # a message, not a crash
    term.expect("> ")
    term.send("\x04")  # Ctrl-D
    assert term.process.wait(timeout=30) == 0
    assert "Traceback" not in term.seen


def test_interactive_generation_leaves_on_ctrl_c(pattern_run, tmp_path):
    model = pattern_run / "run" / "model"
    term = Terminal([str(BIN / "seq2seq-generate"), f"model={model}"], tmp_path)
    term.expect("> ")
    assert term.interrupt_until_exit() == 0
    assert "Traceback" not in term.seen


def test_lines_mode_answers_each_piped_prompt_before_the_next(pattern_run):
    """lines=true: every line a prompt, each sample one output line (newlines as \\n), flushed at once."""
    driver = LineDriver(["seq2seq-generate", f"model={pattern_run / 'run' / 'model'}", "lines=true", "greedy=true",
                         "max_chars=30"], cwd=pattern_run)
    first = driver.ask("abcdefg")[0]
    assert first == "abcdefg" + (ALPHABET[7:] + "\n" + ALPHABET)[:30].replace("\n", "\\n")
    two = driver.ask("xyz", answers=1)[0]
    assert two.startswith("xyz\\nabcdefghij") and "\n" not in two
    assert driver.close() == 0


def test_lines_mode_takes_no_prompt_setting(pattern_run):
    result = run(["seq2seq-generate", f"model={pattern_run / 'run' / 'model'}", "lines=true", "prompt=abc"],
                 cwd=pattern_run, check=False, input="abc\n")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: lines=true reads the prompts from stdin, one a line; leave prompt= unset"
