"""seq2seq-distill on the toy reversal task: one distilled line per source line in input order,
bad lines counted, an interrupted run continued without duplicates, and a student that learns."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from seq2seq.tasks.translation.api import Translator
from tests.helpers import BIN, TINY_REVERSAL, run


def distill_command(teacher: Path, data_dir: Path, output: Path, *settings: str) -> list[str]:
    return ["seq2seq-distill", f"teacher={teacher}", f"data_dir={data_dir}", f"output={output}",
            "src_lang=src", "tgt_lang=tgt", *settings]


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def test_the_distilled_corpus_is_the_teachers_beam_translation_in_input_order(trained_reversal, tmp_path):
    teacher, corpus = trained_reversal / "run" / "model", trained_reversal / "corpus"
    result = run(distill_command(teacher, corpus, tmp_path / "distilled", "chunk_lines=600", "workers=2"),
                 cwd=tmp_path)
    assert "distilled 2500 of 2500 pairs" in result.stdout
    # Lightning ran two processes (DDP on the CPU), each translating its own chunks.
    assert "process 0: chunk" in result.stderr and "process 1: chunk" in result.stderr
    assert result.stdout.count("distilled 2500") == 1  # only the first process reports
    assert "+tokenizer.files.src=" in result.stdout
    sources, targets = lines(tmp_path / "distilled" / "train.src"), lines(tmp_path / "distilled" / "train.tgt")
    assert sources == lines(corpus / "train.src")
    assert len(targets) == 2500
    translator = Translator.load(teacher, device="cpu")
    sample = list(range(0, 2500, 97))
    assert [targets[i] for i in sample] == translator.translate([sources[i] for i in sample], beam=5)
    # The teacher learnt the task, so its translations mostly equal the references.
    references = lines(corpus / "train.tgt")
    assert sum(t == r for t, r in zip(targets, references)) > 1500
    report = json.loads((tmp_path / "distilled" / "distill.json").read_text())
    assert report["pairs"] == 2500 and report["chunks"] == 5 and report["options"]["beam"] == 5
    for split in ("val", "test"):  # the other splits keep their human references
        assert (tmp_path / "distilled" / f"{split}.tgt").read_text() == (corpus / f"{split}.tgt").read_text()


def test_bad_source_lines_are_counted_and_the_pairs_stay_aligned(trained_reversal, tmp_path):
    teacher = trained_reversal / "run" / "model"
    data = tmp_path / "data"
    data.mkdir()
    good = ["red dog runs", "blue cat sits", "big tree"]
    (data / "train.src").write_bytes(b"red dog runs\n\nblue cat sits\n\xff\xfe bad\nbig tree\n")
    (data / "train.tgt").write_text("RUNS DOG RED\n\nSITS CAT BLUE\nX\nTREE BIG\n", encoding="utf-8")
    result = run(distill_command(teacher, data, tmp_path / "out", "splits=[]", "workers=1"), cwd=tmp_path)
    assert "distilled 3 of 5 pairs" in result.stdout and "1 empty, 1 not UTF-8" in result.stdout
    assert lines(tmp_path / "out" / "train.src") == good
    translator = Translator.load(teacher, device="cpu")
    assert lines(tmp_path / "out" / "train.tgt") == translator.translate(good, beam=5)


def test_a_misaligned_corpus_is_one_line_error(trained_reversal, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.src").write_text("a\nb\n")
    (data / "train.tgt").write_text("A\n")
    result = run(distill_command(trained_reversal / "run" / "model", data, tmp_path / "out"), cwd=tmp_path,
                 check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].endswith("has 2 lines but " f"{data / 'train.tgt'} has 1: "
                                                         "the corpus is misaligned")


def test_an_interrupted_run_continues_from_its_finished_chunks(trained_reversal, tmp_path):
    teacher, corpus = trained_reversal / "run" / "model", trained_reversal / "corpus"
    command = distill_command(teacher, corpus, tmp_path / "out", "chunk_lines=100", "workers=1")
    # A new session, so that the kill reaches the whole process group, as a Ctrl-C or a scheduler's would.
    process = subprocess.Popen([str(BIN / command[0]), *command[1:]], cwd=tmp_path, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    chunks = tmp_path / "out" / ".chunks"
    deadline = time.monotonic() + 120
    while len(list(chunks.glob("0*.txt"))) < 3:
        assert process.poll() is None, process.stderr.read()[-2000:]
        assert time.monotonic() < deadline, "no chunk was written"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    finished = len(list(chunks.glob("0*.txt")))
    assert 3 <= finished < 25 and not (tmp_path / "out" / "train.tgt").exists()

    result = run(command, cwd=tmp_path)
    report = json.loads((tmp_path / "out" / "distill.json").read_text())
    assert report["chunks_resumed"] >= finished - 1 >= 2  # a chunk being renamed at the kill may count or not
    assert "distilled 2500 of 2500 pairs" in result.stdout
    resumed = lines(tmp_path / "out" / "train.tgt")
    run(distill_command(teacher, corpus, tmp_path / "whole", "chunk_lines=100", "workers=1"), cwd=tmp_path)
    assert resumed == lines(tmp_path / "whole" / "train.tgt")  # nothing twice, nothing missing, same order

    # Other settings must not mix their chunks into these.
    changed = run([*command, "beam=2"], cwd=tmp_path, check=False)
    assert changed.returncode == 2 and "holds chunks of another teacher, source or settings" in changed.stderr


@pytest.mark.slow
def test_a_smaller_student_learns_from_the_distilled_corpus(trained_reversal, tmp_path):
    teacher, corpus = trained_reversal / "run" / "model", trained_reversal / "corpus"
    run(distill_command(teacher, corpus, tmp_path / "distilled"), cwd=tmp_path)
    tokenizers = json.loads((teacher / "model.json").read_text())["tokenizers"]
    run(["seq2seq-train", *TINY_REVERSAL, f"data.data_dir={tmp_path / 'distilled'}", "trainer.max_epochs=4",
         "model.decoder_hidden_size=32", f"+tokenizer.files.src={teacher / tokenizers['src']}",
         f"+tokenizer.files.tgt={teacher / tokenizers['tgt']}", "hydra.run.dir=student"], cwd=tmp_path)
    student = tmp_path / "student" / "model"
    assert (student / "src.spm.model").read_bytes() == (teacher / tokenizers["src"]).read_bytes()
    scores = {}
    for name, model in (("teacher", teacher), ("student", student)):
        out = run(["seq2seq-evaluate", f"model={model}", f"src={corpus / 'test.src'}", f"ref={corpus / 'test.tgt'}",
                   "beam=1", f"json={tmp_path / name}.json"], cwd=tmp_path)
        assert out.returncode == 0
        scores[name] = json.loads((tmp_path / f"{name}.json").read_text())["bleu"]["score"]
    assert scores["student"] > 0.8 * scores["teacher"], scores
