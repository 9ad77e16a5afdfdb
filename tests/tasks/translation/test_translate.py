"""seq2seq-translate and the Translator API on the reversal model trained once per session."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from seq2seq import Translator
from tests.helpers import BIN, WORDS, LineDriver, Terminal, run, run_in_process

SENTENCES = ["red dog runs", "big tree house river sun", "cat", "moon car bird fish stone hill road",
             "small green", "sits sits sits dog"]


def expected(line: str) -> str:
    return " ".join(reversed(line.split())).upper()


@pytest.fixture(scope="module")
def model_dir(trained_reversal) -> Path:
    return trained_reversal / "run" / "model"


@pytest.fixture(scope="module")
def translator(model_dir) -> Translator:
    return Translator.load(model_dir, device="cpu")


def test_python_api_translates(translator):
    outputs = translator.translate(SENTENCES, beam=5)
    assert len(outputs) == len(SENTENCES)
    assert sum(o == expected(s) for o, s in zip(outputs, SENTENCES)) >= len(SENTENCES) - 1


def test_order_is_kept_when_batches_sort_by_length(translator):
    one_by_one = [translator.translate([s], beam=3)[0] for s in SENTENCES]
    batched = translator.translate(SENTENCES, beam=3, batch_tokens=8)  # several small batches
    assert batched == one_by_one


def test_nbest_sorted_by_score(translator):
    lists = translator.translate(SENTENCES, beam=5, nbest=4)
    for hyps in lists:
        assert len(hyps) == 4
        scores = [h.score for h in hyps]
        assert scores == sorted(scores, reverse=True)
        assert len({h.text for h in hyps}) == 4


def test_sampling_is_reproducible_with_a_seed(translator):
    a = translator.translate(SENTENCES, sampling=True, nbest=3, temperature=1.5, top_p=0.9, seed=7)
    b = translator.translate(SENTENCES, sampling=True, nbest=3, temperature=1.5, top_p=0.9, seed=7)
    assert [[h.text for h in hyps] for hyps in a] == [[h.text for h in hyps] for hyps in b]
    assert all(len(hyps) == 3 for hyps in a)


def test_cli_file_mode_matches_api_and_leaves_no_temporary_files(trained_reversal, model_dir, translator, tmp_path):
    source = tmp_path / "in.src"
    source.write_text("\n".join(SENTENCES) + "\n")
    result = run(["seq2seq-translate", f"model={model_dir}", f"input={source}", f"output={tmp_path}/out.tgt",
                  "beam=4", "batch_tokens=10", "chunk_lines=4", "progress=true"], cwd=tmp_path)
    assert (tmp_path / "out.tgt").read_text().splitlines() == translator.translate(SENTENCES, beam=4)
    assert "line" in result.stderr  # the progress bar, asked for
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.src", "out.tgt"]
    quiet = run(["seq2seq-translate", f"model={model_dir}", f"input={source}", f"output={tmp_path}/out.tgt"],
                cwd=tmp_path)
    assert quiet.stderr == ""  # progress=auto: no bar when stderr is not a terminal


def test_cli_pipe_nbest_format(model_dir, tmp_path):
    result = run(["seq2seq-translate", f"model={model_dir}", "nbest=3", "beam=3"], cwd=tmp_path,
                 input="\n".join(SENTENCES[:3]) + "\n")
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert len(rows) == 9
    assert [(int(r[0]), int(r[1])) for r in rows] == [(i, k) for i in range(3) for k in range(3)]
    for i in range(3):
        scores = [float(r[2]) for r in rows if r[0] == str(i)]
        assert scores == sorted(scores, reverse=True)
    assert rows[0][3] == expected(SENTENCES[0])


def test_attention_heatmaps_and_alignments(model_dir, tmp_path):
    run(["seq2seq-translate", f"model={model_dir}", "input=-", "plot_attention=attn"], cwd=tmp_path,
        input="red dog runs\nsmall green\n")
    assert sorted(p.name for p in (tmp_path / "attn").iterdir()) == [
        "000000.json", "000000.png", "000001.json", "000001.png"]
    alignment = json.loads((tmp_path / "attn" / "000000.json").read_text())
    assert alignment["source_pieces"] == ["▁red", "▁dog", "▁runs"]
    assert len(alignment["attention"]) == len(alignment["target_pieces"])
    assert all(abs(sum(row) - 1) < 1e-4 and len(row) == 3 for row in alignment["attention"])
    assert (tmp_path / "attn" / "000000.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("args, message", [
    (["model=nowhere"], "model directory not found"),
    (["beam=0"], "beam=0"),
    (["temperature=-1", "sampling=true"], "temperature=-1"),
    (["top_p=1.5", "sampling=true"], "top_p=1.5"),
    (["input=missing.txt"], "missing.txt: file not found"),
])
def test_cli_user_errors(model_dir, tmp_path, args, message):
    if not any(a.startswith("model=") for a in args):
        args = [f"model={model_dir}", *args]
    result = run_in_process(["seq2seq-translate", *args], cwd=tmp_path, input="")
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_invalid_utf8_on_a_pipe_names_the_line(model_dir, tmp_path):
    result = subprocess.run([str(BIN / "seq2seq-translate"), f"model={model_dir}", "output=out.txt"], cwd=tmp_path,
                            input=b"red dog\nbad \xff line\n", capture_output=True, timeout=120)
    assert result.returncode == 2
    assert b"<stdin>:2: invalid UTF-8" in result.stderr
    assert not (tmp_path / "out.txt").exists()


def test_interactive_prompt(model_dir, tmp_path):
    term = Terminal([str(BIN / "seq2seq-translate"), f"model={model_dir}"], tmp_path)
    term.expect("> ")
    term.send("red dog runs\n")
    term.expect("RUNS DOG RED")
    term.expect("> ")
    term.send("\n")
    term.expect("empty line")
    term.send(":beam 1\n")
    term.expect("beam=1")
    term.send(":nbest 2\n")
    term.expect("nbest=2")
    term.send("cat sits\n")
    term.expect("error: nbest=2 must be between 1 and beam=1")  # a message, not a crash
    term.send(":beam 4\n")
    term.expect("beam=4")
    term.send("cat sits\n")
    term.expect("0\t")
    term.expect("SITS CAT")
    term.expect("1\t")
    term.send(":bogus\n")
    term.expect("unknown command")
    term.send(" ".join(WORDS * 30) + "\n")
    term.expect("line too long")
    term.send(":help\n")
    term.expect(":quit")
    term.expect("> ")  # readline owns the terminal again: Ctrl-D now reads as end of input
    term.send("\x04")  # Ctrl-D
    assert term.process.wait(timeout=30) == 0


def test_interactive_prompt_leaves_cleanly_on_ctrl_c(model_dir, tmp_path):
    term = Terminal([str(BIN / "seq2seq-translate"), f"model={model_dir}"], tmp_path)
    term.expect("> ")
    assert term.interrupt_until_exit() == 0
    assert "Traceback" not in term.seen


def test_a_pipe_is_answered_line_by_line(model_dir, tmp_path):
    """Another program writes one sentence, waits for its translation, then writes the next; with
    the default chunk_lines=2000 every answer must still come before the next line is sent."""
    driver = LineDriver(["seq2seq-translate", f"model={model_dir}", "beam=2"], cwd=tmp_path)
    answers = [driver.ask(sentence)[0] for sentence in SENTENCES]
    assert driver.close() == 0
    assert sum(a == expected(s) for a, s in zip(answers, SENTENCES)) >= len(SENTENCES) - 1
    assert driver.buffer == b""  # nothing beyond one line per sentence


def test_commands_that_use_a_model_directory_do_not_import_lightning(model_dir):
    """Start-up: the commands import no model code before their settings are read, and translating
    with a model directory never imports Lightning (seconds on a small CPU)."""
    script = f"""
import sys
import seq2seq.cli.translate, seq2seq.cli.generate, seq2seq.cli.classify, seq2seq.cli.forecast
before = sorted(m for m in ("torch", "lightning", "sacrebleu", "matplotlib") if m in sys.modules)
import seq2seq.cli.evaluate  # imports the model code at once (sacreBLEU comparisons), but not Lightning
from seq2seq import Translator
text = Translator.load({str(model_dir)!r}, device="cpu").translate(["red dog runs"])[0]
print(before, "lightning" in sys.modules, "torchmetrics" in sys.modules, text)
"""
    result = subprocess.run([str(BIN / "python"), "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["[]", "False", "False", "RUNS", "DOG", "RED"]
