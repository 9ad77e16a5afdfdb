"""Bad input to the commands: one clear line on stderr, a non-zero exit, no traceback, and no
output file left half-written. Each row of CASES is one mistake a user makes; the rows run the
console scripts' functions in this process (run_in_process), and the last tests run real
processes, so that the scripts themselves are checked to exit the same way."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from seq2seq.bundle import save_bundle
from tests.helpers import TINY_REVERSAL, UNICODE_TEXT, Exploit, char_datamodule, run, run_in_process, tiny_lm


@pytest.fixture(scope="module")
def workspace(trained_reversal, tmp_path_factory) -> Path:
    """A folder with: mt/ (translation model), lm/ (language model), corpus/ and damaged copies."""
    work = tmp_path_factory.mktemp("bad-input")
    shutil.copytree(trained_reversal / "run" / "model", work / "mt")
    shutil.copytree(trained_reversal / "corpus", work / "corpus")
    (work / "lmdata").mkdir()
    data = char_datamodule(work / "lmdata", UNICODE_TEXT)
    save_bundle(work / "lm", tiny_lm(data.tokenizer.vocab_size), "lstm_lm", data.tokenizer_files())

    truncated = shutil.copytree(work / "mt", work / "mt_truncated")
    weights = (truncated / "weights.pt").read_bytes()
    (truncated / "weights.pt").write_bytes(weights[: len(weights) // 2])
    foreign = shutil.copytree(work / "mt", work / "mt_foreign_json")
    (foreign / "model.json").write_bytes(b"\x89PNG\r\n\x1a\n not a config")
    no_tokenizer = shutil.copytree(work / "mt", work / "mt_no_tokenizer")
    (no_tokenizer / "src.spm.model").unlink()
    other_weights = shutil.copytree(work / "mt", work / "mt_lm_weights")  # a language model's weights
    shutil.copyfile(work / "lm" / "weights.pt", other_weights / "weights.pt")
    evil = shutil.copytree(work / "mt", work / "mt_class_name")
    config = json.loads((evil / "model.json").read_text())
    config["model_type"] = "subprocess.Popen"
    (evil / "model.json").write_text(json.dumps(config))

    (work / "bad_utf8.txt").write_bytes(b"red dog\nblue \xff cat\n")
    (work / "empty.txt").write_text("")
    (work / "a_file").write_text("x\n")
    (work / "short.tgt").write_text("ONE\n")
    (work / "corrupt.ckpt").write_bytes(b"PK\x03\x04 broken zip")
    torch.save({"state_dict": {"model.weight": torch.zeros(3)}}, work / "other_model.ckpt")
    Exploit.marker = str(work / "pwned")
    torch.save({"state_dict": {}, "payload": Exploit()}, work / "planted.ckpt")
    return work


TRAIN = ["seq2seq-train", *TINY_REVERSAL, "data.data_dir=corpus", "hydra.run.dir=run", "trainer.max_steps=2"]

# (command, what the user got wrong, expected text in the error line, output file that must not appear)
CASES = [
    # seq2seq-translate
    (["seq2seq-translate", "model=nowhere", "input=corpus/test.src"], "model directory not found", None),
    (["seq2seq-translate", "model=a_file", "input=corpus/test.src"], "is not a model directory", None),
    (["seq2seq-translate", "model=mt", "input=missing.src", "output=out.txt"], "missing.src: file not found",
     "out.txt"),
    (["seq2seq-translate", "model=mt", "input=corpus", "output=out.txt"], "is a directory", "out.txt"),
    (["seq2seq-translate", "model=mt", "input=bad_utf8.txt", "output=out.txt"], "bad_utf8.txt:2: invalid UTF-8",
     "out.txt"),
    (["seq2seq-translate", "model=mt", "input=corpus/test.src", "output=a_file/out.txt"], "cannot write there", None),
    (["seq2seq-translate", "model=mt", "input=corpus/test.src", "output=corpus"], "is a directory", None),
    (["seq2seq-translate", "model=mt", "input=corpus/test.src", "beam=0"], "beam=0", None),
    (["seq2seq-translate", "model=mt", "input=corpus/test.src", "nbest=3", "beam=2"], "nbest=3", None),
    (["seq2seq-translate", "model=mt", "input=corpus/test.src", "sampling=true", "top_p=1.5"], "top_p=1.5", None),
    (["seq2seq-translate", "model=mt", "input=corpus/test.src", "sampling=true", "temperature=-1"], "temperature=-1",
     None),
    (["seq2seq-translate", "model=mt", "input=corpus/test.src", "precision=fp8"], "precision='fp8'", None),
    (["seq2seq-translate", "model=mt_truncated", "input=corpus/test.src"], "corrupt or truncated", None),
    (["seq2seq-translate", "model=mt_foreign_json", "input=corpus/test.src"], "not valid JSON", None),
    (["seq2seq-translate", "model=mt_no_tokenizer", "input=corpus/test.src"], "src.spm.model is missing", None),
    (["seq2seq-translate", "model=mt_lm_weights", "input=corpus/test.src"], "weights do not match", None),
    (["seq2seq-translate", "model=mt_class_name", "input=corpus/test.src"], "unknown model type 'subprocess.Popen'",
     None),
    (["seq2seq-translate", "model=lm", "input=corpus/test.src"], "needs a seq2seq model", None),
    # seq2seq-evaluate
    (["seq2seq-evaluate", "model=mt", "src=corpus/test.src", "ref=short.tgt", "json=s.json"], "has 100 lines but",
     "s.json"),
    (["seq2seq-evaluate", "model=mt", "src=empty.txt", "ref=empty.txt"], "file is empty", None),
    (["seq2seq-evaluate", "model=mt", "src=corpus/test.src", "ref=corpus/test.tgt", "min_bleu=high"], "min_bleu",
     None),
    (["seq2seq-evaluate", "model=mt", "src=corpus/test.src"], "src= and ref= are required", None),
    (["seq2seq-evaluate", "model=lm", "text=missing.txt"], "missing.txt: file not found", None),
    (["seq2seq-evaluate", "model=lm", "text=bad_utf8.txt"], "bad_utf8.txt:2: invalid UTF-8", None),
    (["seq2seq-evaluate", "model=lm", "text=empty.txt"], "at least two characters", None),
    (["seq2seq-evaluate", "model=mt", "text=corpus/test.src"], "text= scores a language model", None),
    # seq2seq-generate
    (["seq2seq-generate", "model=lm", "prompt=a", "max_chars=-1"], "max_chars=-1", None),
    (["seq2seq-generate", "model=lm", "prompt=a", "top_k=-3"], "top_k=-3", None),
    (["seq2seq-generate", "model=mt", "prompt=a"], "needs a lstm_lm model", None),
    (["seq2seq-generate", "prompt=a"], "model= is required", None),
    (["seq2seq-translate", "model=mt", "input=corpus/test.src", "precision=fp64"],
     "precision='fp64' is not one of auto", None),
    # seq2seq-train
    (TRAIN + ["data.data_dir=nowhere"], "file not found", None),
    (TRAIN + ["model.attention=fancy"], "model.attention='fancy'", None),
    (TRAIN + ["optim.lr=-1"], "optim.lr=-1", None),
    (TRAIN + ["optim.optimizer=sgdx"], "optim.optimizer='sgdx'", None),
    (TRAIN + ["tokenizer.model_type=morse"], "model_type='morse'", None),
    (TRAIN + ["model.share_embeddings=true"], "needs tokenizer.joint=true", None),
    (TRAIN + ["model.share_embeddings=true", "tokenizer.joint=true", "tokenizer.vocab_size=30",
              "tokenizer.src_vocab_size=30", "tokenizer.tgt_vocab_size=40"], "src_vocab_size == tgt_vocab_size", None),
    (TRAIN + ["trainer.max_epochs=many"], "trainer.max_epochs='many' must be a whole number", None),
    (TRAIN + ["trainer.precision=fp64"], "trainer.precision='fp64' is not one of auto, 32-true", None),
    (TRAIN + ["resume=nowhere.ckpt"], "checkpoint not found", None),
    (TRAIN + ["resume=corrupt.ckpt"], "corrupt or truncated", None),
    (TRAIN + ["resume=other_model.ckpt"], "checkpoint is of another model", None),
]


def case_id(case) -> str:
    return f"{case[0][0]}:{case[1]}"


@pytest.mark.parametrize("command, message, output", CASES, ids=[case_id(c) for c in CASES])
def test_bad_input_gives_one_clear_line(workspace, command, message, output):
    if output:
        (workspace / output).unlink(missing_ok=True)
    result = run_in_process(command, cwd=workspace)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert "Traceback" not in result.stderr
    assert lines[-1].startswith("error: ") and message in lines[-1], result.stderr[-2000:]
    # Training logs its progress before the error; the other commands print nothing else.
    if command[0] != "seq2seq-train":
        assert len(lines) == 1, result.stderr
    if output:
        assert not (workspace / output).exists()
    assert not list(workspace.glob(".out.txt.*")) and not list(workspace.glob(".s.json.*"))


def test_resume_refuses_a_checkpoint_whose_pickle_would_run_code(workspace):
    result = run(TRAIN + ["resume=planted.ckpt"], cwd=workspace, check=False)
    assert result.returncode == 2 and "refused to load" in result.stderr.strip().splitlines()[-1]
    assert not (workspace / "pwned").exists()


@pytest.mark.parametrize("command, message", [
    (["seq2seq-translate", "model=mt", "input=corpus/test.src", "bogus_key=1"], "bogus_key"),
    (["seq2seq-train", "experiment=no_such_recipe"], "no_such_recipe"),
])
def test_hydra_config_mistakes_are_named_without_traceback(workspace, command, message):
    result = run(command, cwd=workspace, check=False)
    assert result.returncode != 0
    assert message in result.stderr and "Traceback" not in result.stderr


def test_hostile_text_gets_one_output_line_per_input_line(workspace):
    hostile = ["", "   ", "!!!???...,,,", "\x07\x1b[31m control \x00 chars", "日本語のテキスト mixed with English",
               "Ελληνικά και русский", "red " * 500, "🦓🦓🦓", "\u200b\u200d\ufeff", "red dog"]
    (workspace / "hostile.txt").write_text("\n".join(hostile) + "\n", encoding="utf-8")
    result = run(["seq2seq-translate", "model=mt", "input=hostile.txt", "output=hostile.out"], cwd=workspace)
    assert result.returncode == 0
    outputs = (workspace / "hostile.out").read_text(encoding="utf-8").split("\n")
    assert outputs[-1] == "" and len(outputs[:-1]) == len(hostile)
    assert outputs[-2] == "DOG RED"
    assert "warning: line 7" in result.stderr  # the over-long line is clipped, with a warning


@pytest.mark.slow
def test_a_source_file_of_100000_lines(workspace):
    lines = (workspace / "corpus" / "train.src").read_text().splitlines()
    big = (lines * (100_000 // len(lines) + 1))[:100_000]
    (workspace / "big.src").write_text("\n".join(big) + "\n")
    run(["seq2seq-translate", "model=mt", "input=big.src", "output=big.out", "beam=1", "progress=false"],
        cwd=workspace)
    assert len((workspace / "big.out").read_text().splitlines()) == 100_000
