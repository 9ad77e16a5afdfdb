"""Sentence classification end to end: seq2seq-train on a separable toy task the test writes,
seq2seq-classify (file, pipe, prompt), the Classifier API, and the data loader's split, cp1252
repair, download and bad-input handling."""

from __future__ import annotations

import hashlib
import json
import logging
import random
import zipfile
from pathlib import Path

import pytest
import torch

from seq2seq import Classifier, datasets
from seq2seq.errors import UserError
from seq2seq.metrics import classification_scores, format_confusion
from seq2seq.tasks.classification.data import ClassificationDataModule
from seq2seq.tasks.classification.model import LSTMClassifier
from seq2seq.text import repair_cp1252
from tests.helpers import BIN, LineDriver, Terminal, run, run_in_process

FILLER = ["the", "film", "plot", "actors", "story", "was", "is", "quite", "a", "very", "this", "movie",
          "and", "with", "of", "script", "ending", "music", "scenes", "cast"]
POSITIVE = ["good", "great", "superb", "lovely"]
NEGATIVE = ["bad", "awful", "dull", "terrible"]
VOCAB = len(FILLER) + len(POSITIVE) + len(NEGATIVE) + 4  # every word is a piece, plus pad/unk/bos/eos


def toy_sentence(rng: random.Random, words: list[str]) -> str:
    sentence = [rng.choice(FILLER) for _ in range(rng.randint(3, 8))]
    sentence.insert(rng.randint(0, len(sentence)), rng.choice(words))
    return " ".join(sentence)


def write_toy_files(directory: Path, lines_per_label: int = 500, seed: int = 0) -> Path:
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for name, words in (("toy.neg", NEGATIVE), ("toy.pos", POSITIVE)):
        (directory / name).write_text("".join(toy_sentence(rng, words) + "\n" for _ in range(lines_per_label)))
    return directory


# The real recipe with the toy files, line ranges and a small, fast model.
TOY_TRAINING = [
    "experiment=rt_polarity_sentiment", "data.data_dir=.", "data.download=null",
    "data.label_files.negative=toy.neg", "data.label_files.positive=toy.pos",
    "data.train_lines=[1,400]", "data.valid_lines=[401,450]", "data.test_lines=[451,500]", "data.max_tokens=300",
    "tokenizer.model_type=word", f"tokenizer.vocab_size={VOCAB}", "model.embed_dim=16", "model.hidden_size=16",
    "model.dropout=0.0", "optim.lr=0.01", "trainer.max_epochs=4", "trainer.enable_progress_bar=false",
    "paths.cache_dir=cache",
]


def train_toy_classifier(work: Path) -> None:
    write_toy_files(work)
    result = run(["seq2seq-train", *TOY_TRAINING, "hydra.run.dir=run"], cwd=work)
    assert "model written to" in result.stdout
    (work / "stdout.txt").write_text(result.stdout)


@pytest.fixture(scope="module")
def toy_run(build_once) -> Path:
    return build_once("classifier", train_toy_classifier)


def expected_label(line: str) -> str:
    return "positive" if any(w in line.split() for w in POSITIVE) else "negative"


def test_training_learns_the_toy_task_and_reports_the_test_split(toy_run):
    scores = json.loads((toy_run / "run" / "test_scores.json").read_text())
    assert scores["examples"] == 100 and scores["labels"] == ["negative", "positive"]
    assert scores["accuracy"] >= 0.9 and scores["macro_f1"] >= 0.9
    assert [sum(row) for row in scores["confusion_matrix"]] == [50, 50]  # rows: the truth
    stdout = (toy_run / "stdout.txt").read_text()
    assert f"accuracy {scores['accuracy']:.4f}, macro-F1 {scores['macro_f1']:.4f}" in stdout
    assert format_confusion(scores) in stdout
    config = json.loads((toy_run / "run" / "model" / "model.json").read_text())
    assert config["model_type"] == "lstm_classifier" and config["labels"] == ["negative", "positive"]
    assert config["trained"]["val_accuracy"] >= 0.9  # the checkpoint was chosen on validation accuracy
    assert any("acc" in p.name for p in (toy_run / "run" / "checkpoints").glob("epoch*.ckpt"))
    predictions = (toy_run / "run" / "test.predictions.tsv").read_text().splitlines()
    assert len(predictions) == 100


def test_classify_file_and_pipe_keep_order_and_line_count_and_match_the_api(toy_run):
    rng = random.Random(5)
    lines = [toy_sentence(rng, rng.choice([POSITIVE, NEGATIVE])) for _ in range(40)]
    lines[7] = ""  # an empty line: nothing to classify, an empty row keeps the output aligned
    (toy_run / "reviews.txt").write_text("\n".join(lines) + "\n")
    result = run(["seq2seq-classify", "model=run/model", "input=reviews.txt", "output=labels.tsv"], cwd=toy_run)
    rows = (toy_run / "labels.tsv").read_text().split("\n")[:-1]
    assert len(rows) == len(lines) and rows[7] == ""
    assert "1 empty input line" in result.stderr
    correct = 0
    for line, row in zip(lines, rows):
        if not line:
            continue
        label, probability = row.split("\t")
        assert 0.5 <= float(probability) <= 1.0
        correct += label == expected_label(line)
    assert correct >= 0.9 * (len(lines) - 1)
    piped = run(["seq2seq-classify", "model=run/model"], cwd=toy_run, input="\n".join(lines) + "\n")
    assert piped.stdout.split("\n")[:-1] == rows
    api = Classifier.load(toy_run / "run" / "model", device="cpu").classify(lines)
    assert ["" if p is None else f"{p.label}\t{p.probability:.4f}" for p in api] == rows


def test_a_pipe_is_answered_line_by_line(toy_run):
    """A program that writes one review and waits gets its label before it writes the next."""
    rng = random.Random(9)
    lines = [toy_sentence(rng, words) for words in (POSITIVE, NEGATIVE, POSITIVE, NEGATIVE)]
    driver = LineDriver(["seq2seq-classify", "model=run/model"], cwd=toy_run)
    rows = [driver.ask(line)[0] for line in lines]
    assert driver.close() == 0
    assert sum(row.split("\t")[0] == expected_label(line) for line, row in zip(lines, rows)) >= 3
    assert all(0.5 <= float(row.split("\t")[1]) <= 1.0 for row in rows)


def test_python_api(toy_run):

    classifier = Classifier.load(toy_run / "run" / "model", device="cpu")
    texts = ["the film was great", "the plot was awful", "", "a very dull movie"]
    predictions = classifier.classify(texts)
    assert predictions[2] is None
    assert [p.label for p in predictions if p] == ["positive", "negative", "negative"]
    first = predictions[0]
    assert first.probability == max(first.probabilities.values())
    assert sum(first.probabilities.values()) == pytest.approx(1.0)
    # Input is prepared as the training text was: lower-cased, cp1252 control characters repaired.
    assert classifier.classify(["THE FILM WAS GREAT"])[0].probability == pytest.approx(first.probability)


def test_interactive_prompt(toy_run):
    term = Terminal([str(BIN / "seq2seq-classify"), "model=run/model"], toy_run)
    term.expect("> ")
    term.send("what a lovely film\n")
    term.expect("positive 0.")
    term.send(":all on\n")
    term.expect("all_probabilities=True")
    term.send("the ending was terrible\n")
    term.expect("negative 0.")
    term.expect("positive 0.")
    term.send("\n")
    term.expect("(empty line")
    term.send(":quit\n")
    assert term.process.wait(timeout=30) == 0


def test_cp1252_control_characters_are_repaired(tmp_path, caplog):
    assert (repair_cp1252("a \x96 b \x97 c \x91it\x92s\x92 \x93q\x94 \x85")
            == "a \u2013 b \u2014 c \u2018it\u2019s\u2019 \u201cq\u201d \u2026")
    assert repair_cp1252("caf\u00e9 \x81") == "caf\u00e9 \x81"  # real letters and unassigned bytes stay
    (tmp_path / "a.neg").write_text("it\x92s dull \x97 really\nplain line\nok \x96 fine\n", encoding="utf-8")
    (tmp_path / "a.pos").write_text("good\ngreat\nfine\n", encoding="utf-8")
    data = ClassificationDataModule(str(tmp_path), {"neg": "a.neg", "pos": "a.pos"}, {"vocab_size": 8},
                                    str(tmp_path / "cache"), [1, 2], [3, 3])
    with caplog.at_level(logging.INFO, logger="seq2seq.tasks.classification.data"):
        splits = data.splits()
    assert splits["train"].texts == ["it\u2019s dull \u2014 really", "plain line", "good", "great"]
    assert splits["train"].labels == [0, 0, 1, 1]
    assert splits["valid"].texts == ["ok \u2013 fine", "fine"]
    assert "a.neg: repaired cp1252 control characters (quotes, dashes) in 2 lines" in caplog.text
    assert "a.pos: repaired" not in caplog.text


def rt_datamodule(data_dir: Path, **overrides) -> ClassificationDataModule:
    """The recipe's data settings (conf/data/rt_polarity.yaml), reading `data_dir`."""
    from omegaconf import OmegaConf

    from seq2seq.config import build
    from tests.helpers import compose_train

    cfg = compose_train(["experiment=rt_polarity_sentiment", f"data.data_dir={data_dir}", "data.download=null",
                         *(f"data.{k}={v}" for k, v in overrides.items())])
    return build(cfg.data, tokenizer=OmegaConf.to_container(cfg.tokenizer, resolve=True), _convert_="all")


def test_split_takes_the_documented_line_ranges(tmp_path):
    for suffix in ("pos", "neg"):
        (tmp_path / f"rt-polarity.{suffix}").write_text("".join(f"{suffix} {n}\n" for n in range(1, 5332)))
    splits = rt_datamodule(tmp_path).splits()
    expected = {"train": (1, 4265), "valid": (4266, 4798), "test": (4799, 5331)}
    for name, (first, last) in expected.items():
        lines = [f"neg {n}" for n in range(first, last + 1)] + [f"pos {n}" for n in range(first, last + 1)]
        assert splits[name].texts == lines
        assert splits[name].labels == [0] * (last - first + 1) + [1] * (last - first + 1)
    assert [len(splits[n].texts) for n in expected] == [8530, 1066, 1066]
    with pytest.raises(UserError, match="overlap"):
        rt_datamodule(tmp_path, valid_lines="[4200,4798]")
    with pytest.raises(UserError, match="has 5331 lines, but the test split needs lines 4799-6000"):
        rt_datamodule(tmp_path, test_lines="[4799,6000]").splits()


def test_missing_rt_polarity_files_come_from_the_zip(tmp_path, monkeypatch):
    archive = tmp_path / "sentence_polarity.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("sentence_polarity/rt-polarity.pos", "good one .\n")
        zipped.writestr("sentence_polarity/rt-polarity.neg", "bad one .\n")
        zipped.writestr("sentence_polarity/README", "readme\n")
    monkeypatch.setitem(datasets.DOWNLOADS, "rt_polarity", {
        name: f"{archive.as_uri()}#{name}" for name in ("rt-polarity.pos", "rt-polarity.neg")})
    monkeypatch.setitem(datasets.SHA256, "rt_polarity", {  # the extracted members' sums
        "rt-polarity.pos": hashlib.sha256(b"good one .\n").hexdigest(),
        "rt-polarity.neg": hashlib.sha256(b"bad one .\n").hexdigest()})
    local = tmp_path / "data"
    datasets.ensure_files("rt_polarity", local)
    assert (local / "rt-polarity.pos").read_text() == "good one .\n"
    assert (local / "rt-polarity.neg").read_text() == "bad one .\n"
    assert sorted(p.name for p in local.iterdir()) == ["rt-polarity.neg", "rt-polarity.pos"]


def test_metrics_and_model_shapes():
    scores = classification_scores([0, 0, 0, 1, 1], [0, 0, 1, 1, 1], ["n", "p"])
    assert scores["accuracy"] == pytest.approx(0.8)
    assert scores["confusion_matrix"] == [[2, 1], [0, 2]]
    assert scores["macro_f1"] == pytest.approx((0.8 + 0.8) / 2)  # n: P 1, R 2/3; p: P 2/3, R 1
    tokens, lengths = torch.tensor([[5, 6, 7], [8, 0, 0]]), torch.tensor([3, 1])
    for pooling in ("final", "mean", "attention"):
        model = LSTMClassifier(10, 3, embed_dim=4, hidden_size=5, pooling=pooling).eval()
        logits = model(tokens, lengths)
        assert logits.shape == (2, 3)
        # Padding never changes a sentence's logits: row 2 alone gives the same answer.
        assert torch.allclose(model(tokens[1:, :1], lengths[1:]), logits[1:], atol=1e-6)
    _, weights = LSTMClassifier(10, 2, pooling="attention")(tokens, lengths, return_weights=True)
    assert weights[1, 1:].sum() == 0 and torch.allclose(weights.sum(-1), torch.ones(2))


@pytest.mark.parametrize("args, setup, message", [
    (["model.pooling=max"], None, "model.pooling='max' is not one of final, mean, attention"),
    ([], lambda d: (d / "toy.neg").write_bytes(b"bad \xff line\n" * 500), "toy.neg:1: invalid UTF-8"),
])
def test_training_refuses_bad_input_in_one_line(tmp_path, args, setup, message):
    write_toy_files(tmp_path)
    if setup is not None:
        setup(tmp_path)
    result = run_in_process(["seq2seq-train", *TOY_TRAINING, *args, "hydra.run.dir=run"], cwd=tmp_path)
    assert result.returncode == 2
    # Training may log progress on stderr first (e.g. the seed); the error is one last line.
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last and "Traceback" not in result.stderr


@pytest.mark.parametrize("setup, message", [
    (lambda d: (d / "toy.pos").unlink(), "toy.pos: file not found"),
    (lambda d: (d / "toy.neg").write_text(""), "toy.neg: file is empty"),
    (lambda d: (d / "toy.neg").write_text("\n" * 500), "toy.neg: lines 1-400 \\(the train split\\) are all empty"),
])
def test_data_module_refuses_bad_files(tmp_path, setup, message):
    setup(write_toy_files(tmp_path))
    data = ClassificationDataModule(str(tmp_path), {"neg": "toy.neg", "pos": "toy.pos"}, {"vocab_size": 8},
                                    str(tmp_path / "cache"), [1, 400], [401, 500])
    with pytest.raises(UserError, match=message):
        data.splits()


def test_classify_refuses_bad_input_in_one_line(toy_run, tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"good film\n\xff\n")
    result = run_in_process(["seq2seq-classify", f"model={toy_run / 'run' / 'model'}", "input=bad.txt",
                             "output=out.tsv"], cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == ["error: bad.txt:2: invalid UTF-8 "
                                                                              "(byte 0 of the line)"]
    assert not (tmp_path / "out.tsv").exists()


def test_validation_metrics_agree_with_the_test_report():
    """Validation scores with torchmetrics (synced over DDP ranks), the test report with
    classification_scores (per-class figures and the confusion matrix): the two must agree."""
    from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

    generator = torch.Generator().manual_seed(3)
    for classes in (2, 5):
        gold = torch.randint(0, classes, (300,), generator=generator)
        # Class 0 is never predicted: its F1 is 0 in both, not left out of the mean.
        predicted = torch.where(torch.rand(300, generator=generator) < 0.6, gold,
                                torch.randint(0, classes, (300,), generator=generator)).clamp(min=1)
        ours = classification_scores(gold.tolist(), predicted.tolist(), [str(c) for c in range(classes)])
        accuracy = MulticlassAccuracy(classes, average="micro")(predicted, gold)
        macro_f1 = MulticlassF1Score(classes, average="macro")(predicted, gold)
        assert float(accuracy) == pytest.approx(ours["accuracy"], abs=1e-6)
        assert float(macro_f1) == pytest.approx(ours["macro_f1"], abs=1e-6)
        assert ours["per_class"]["0"]["f1"] == 0.0
