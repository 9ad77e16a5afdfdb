"""The exported-model runtime against PyTorch on trained tiny models: the same translations
(greedy, beam, n-best, n-gram blocking, shortlist), generated text and class probabilities; the
commands on an exported directory, without torch; bad exports."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from seq2seq import Classifier, Generator, Translator
from seq2seq.portable import load
from seq2seq.text import read_lines
from tests.helpers import run_in_process
from tests.tasks.classification.test_classification import train_toy_classifier
from tests.tasks.language_model.test_generate import train_pattern_lm
from tests.tasks.translation.test_shortlist_decoding import copy_model

ROOT = Path(__file__).resolve().parents[2]


def export(model_dir: Path, output: Path, *settings: str) -> Path:
    result = run_in_process(["seq2seq-export", f"model={model_dir}", f"output={output}", *settings], cwd=output.parent)
    assert result.returncode == 0, result.stderr
    assert "exported" in result.stdout
    return output


@pytest.fixture(scope="module")
def reversal_model(trained_reversal, tmp_path_factory) -> Path:
    """The reversal model with a shortlist narrower than its vocabulary, so that restricting shows."""
    directory = copy_model(trained_reversal / "run" / "model", tmp_path_factory.mktemp("narrow") / "model")
    built = run_in_process(["seq2seq-shortlist", f"model={directory}", "frequent=4", "per_source=2"],
                           cwd=directory.parent)
    assert built.returncode == 0, built.stderr
    return directory


@pytest.fixture(scope="module")
def exported_reversal(reversal_model, tmp_path_factory) -> Path:
    return export(reversal_model, tmp_path_factory.mktemp("exported") / "reversal")


@pytest.fixture(scope="module")
def sources(trained_reversal) -> list[str]:
    return read_lines(trained_reversal / "corpus" / "test.src")


OPTIONS = [
    {"beam": 1, "shortlist": "false"},
    {"beam": 1, "shortlist": "true"},
    {"beam": 4, "nbest": 3, "shortlist": "false"},
    {"beam": 4, "nbest": 2, "shortlist": "true", "length_penalty": 0.0},
    {"beam": 3, "no_repeat_ngram_size": 2, "shortlist": "false"},
    {"beam": 5, "max_len_ratio": 0.5, "max_len_offset": 1, "shortlist": "false"},  # EOS forced at the limit
]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_exported_translations_equal_pytorch_ones(reversal_model, exported_reversal, sources, options):
    pytorch = Translator.load(reversal_model, device="cpu", precision="fp32").translate(
        sources, return_hypotheses=True, **options)
    exported = load(exported_reversal).translate(sources, return_hypotheses=True, **options)
    assert [[h.text for h in hyps] for hyps in exported] == [[h.text for h in hyps] for hyps in pytorch]
    np.testing.assert_allclose([h.score for hyps in exported for h in hyps],
                               [h.score for hyps in pytorch for h in hyps], atol=1e-4)
    assert sum(len(hyps[0].tokens) for hyps in exported) > len(sources)  # real output, not empty lines


def test_the_shortlist_restricts_the_exported_search(exported_reversal, sources):
    translator = load(exported_reversal)
    shortlist = translator.shortlist_for(translator.options(shortlist="true"))
    src = np.array(translator.src_tokenizer.encode(sources[:1]), dtype=np.int64)
    assert len(translator.batch_vocabulary(shortlist, src)) < translator.tgt_tokenizer.vocab_size
    assert translator.shortlist_for(translator.options(shortlist="false")) is None


def test_sampling_is_seeded_and_draws_from_the_model(exported_reversal, sources):
    translator = load(exported_reversal)
    first = translator.translate(sources[:20], sampling=True, nbest=3, seed=1, temperature=1.5, return_hypotheses=True)
    again = translator.translate(sources[:20], sampling=True, nbest=3, seed=1, temperature=1.5, return_hypotheses=True)
    other = translator.translate(sources[:20], sampling=True, nbest=3, seed=2, temperature=1.5, return_hypotheses=True)
    texts = [[h.text for h in hyps] for hyps in first]
    assert texts == [[h.text for h in hyps] for hyps in again]
    assert texts != [[h.text for h in hyps] for hyps in other]
    assert all(hyps[0].score >= hyps[-1].score for hyps in first)  # best first
    # At a low temperature the draws follow the model: mostly its greedy translation.
    cold = translator.translate(sources[:20], sampling=True, seed=1, temperature=0.2)
    greedy = translator.translate(sources[:20], beam=1)
    assert sum(c == g for c, g in zip(cold, greedy)) >= 15


def test_int8_export_is_smaller_and_translates_nearly_the_same(reversal_model, exported_reversal, sources, tmp_path):
    int8 = export(reversal_model, tmp_path / "int8", "precision=int8")
    assert json.loads((int8 / "export.json").read_text())["precision"] == "int8"
    size = lambda d: sum(f.stat().st_size for f in d.glob("*.onnx"))  # noqa: E731
    assert size(int8) < 0.5 * size(exported_reversal)
    fp32 = load(exported_reversal).translate(sources, beam=4)
    quantized = load(int8).translate(sources, beam=4)
    assert sum(a == b for a, b in zip(fp32, quantized)) >= 0.9 * len(sources)


def test_exported_language_model_generates_what_pytorch_does(build_once, tmp_path):
    run_dir = build_once("pattern-lm", train_pattern_lm) / "run" / "model"
    exported = export(run_dir, tmp_path / "lm")
    pytorch = Generator.load(run_dir, device="cpu", precision="fp32")
    runtime = load(exported)
    assert runtime.generate("abc", max_chars=60, greedy=True) == pytorch.generate("abc", max_chars=60, greedy=True)
    samples = runtime.generate("a", max_chars=40, num_samples=2, temperature=0.5, seed=3)
    assert samples == runtime.generate("a", max_chars=40, num_samples=2, temperature=0.5, seed=3)
    assert all(len(s) == 40 for s in samples)
    result = run_in_process(["seq2seq-generate", f"model={exported}", "prompt=ab", "max_chars=30", "greedy=true",
                             "stop=[\"x\"]"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ab" + pytorch.generate("ab", max_chars=30, greedy=True, stop=["x"]))


def test_exported_classifier_gives_pytorch_probabilities(build_once, tmp_path):
    work = build_once("classifier", train_toy_classifier)
    exported = export(work / "run" / "model", tmp_path / "classifier")
    texts = read_lines(work / "toy.pos")[:30] + read_lines(work / "toy.neg")[:30] + [""]
    pytorch = Classifier.load(work / "run" / "model", device="cpu", precision="fp32").probabilities(texts)
    runtime = load(exported).probabilities(texts)
    assert runtime[-1] is None and pytorch[-1] is None
    np.testing.assert_allclose(np.stack(runtime[:-1]), np.stack([p.numpy() for p in pytorch[:-1]]), atol=1e-5)
    result = run_in_process(["seq2seq-classify", f"model={exported}", "input=-"], cwd=tmp_path, input=texts[0] + "\n")
    assert result.returncode == 0 and result.stdout.split("\t")[0] in ("positive", "negative")


def test_commands_on_an_exported_directory(exported_reversal, reversal_model, sources, trained_reversal, tmp_path):
    (tmp_path / "in.txt").write_text("\n".join(sources[:10]) + "\n")
    translated = run_in_process(["seq2seq-translate", f"model={exported_reversal}", "input=in.txt", "output=out.txt",
                                 "beam=3"], cwd=tmp_path)
    assert translated.returncode == 0, translated.stderr
    expected = Translator.load(reversal_model, device="cpu", precision="fp32").translate(sources[:10], beam=3)
    assert read_lines(tmp_path / "out.txt") == expected
    nbest = run_in_process(["seq2seq-translate", f"model={exported_reversal}", "nbest=2", "beam=2"], cwd=tmp_path,
                           input=sources[0] + "\n")
    assert [row.split("\t")[:2] for row in nbest.stdout.splitlines()] == [["0", "0"], ["0", "1"]]
    corpus = trained_reversal / "corpus"
    scored = run_in_process(["seq2seq-evaluate", f"model={exported_reversal}", f"src={corpus / 'test.src'}",
                             f"ref={corpus / 'test.tgt'}", "json=scores.json", "min_bleu=50"], cwd=tmp_path)
    assert scored.returncode == 0, scored.stderr
    report = json.loads((tmp_path / "scores.json").read_text())
    assert report["bleu"]["score"] > 50 and report["runtime"] == "onnxruntime"
    refused = run_in_process(["seq2seq-evaluate", f"model={exported_reversal}", f"src={corpus / 'test.src'}",
                              f"ref={corpus / 'test.tgt'}", "min_bleu=101"], cwd=tmp_path)
    assert refused.returncode == 1 and "below min_bleu=101" in refused.stderr


@pytest.mark.parametrize(("settings", "message"), [
    (["beems=3"], "unknown setting 'beems'"),
    (["beam=0"], "beam=0 must be at least 1"),
    (["precision=int8"], "was exported in fp32"),
    (["device=cuda"], "run on the CPU"),
    (["nbest"], "expected key=value"),
])
def test_bad_settings_are_one_line_errors(exported_reversal, tmp_path, settings, message):
    result = run_in_process(["seq2seq-translate", f"model={exported_reversal}", *settings], cwd=tmp_path, input="a\n")
    assert result.returncode == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_bad_exports_are_one_line_errors(exported_reversal, reversal_model, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(exported_reversal, broken)
    (broken / "export.json").write_text("{not json")
    result = run_in_process(["seq2seq-translate", f"model={broken}"], cwd=tmp_path, input="a\n")
    assert result.returncode == 2 and "export.json: not valid JSON" in result.stderr
    (broken / "export.json").write_text((exported_reversal / "export.json").read_text())
    (broken / "decoder_step.onnx").write_bytes(b"\x00garbage")
    result = run_in_process(["seq2seq-translate", f"model={broken}"], cwd=tmp_path, input="a\n")
    assert result.returncode == 2 and "not a loadable ONNX graph" in result.stderr
    (broken / "decoder_step.onnx").unlink()
    result = run_in_process(["seq2seq-translate", f"model={broken}"], cwd=tmp_path, input="a\n")
    assert result.returncode == 2 and "decoder_step.onnx is missing" in result.stderr
    # The export refuses an ensemble, and a folder that is not an earlier export.
    (tmp_path / "occupied").mkdir()
    (tmp_path / "occupied" / "notes.txt").write_text("keep me")
    for settings, message in ([f"model=[{reversal_model},{reversal_model}]", "output=x"], "not an ensemble"), (
            [f"model={reversal_model}", "output=occupied"], "is not an exported model directory"):
        result = run_in_process(["seq2seq-export", *settings], cwd=tmp_path)
        assert result.returncode == 2 and message in result.stderr
    assert (tmp_path / "occupied" / "notes.txt").read_text() == "keep me"


def test_the_commands_run_an_export_without_torch_lightning_or_hydra(exported_reversal, tmp_path):
    """The runtime's modules imported with torch, Lightning, Hydra and OmegaConf made unimportable."""
    script = f"""
import sys
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "lightning", "hydra", "omegaconf"):
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Refuse())
sys.argv = ["seq2seq-translate", "model={exported_reversal}", "beam=2"]
from seq2seq.cli.dispatch import translate
translate()
assert not any(m.split(".")[0] in ("torch", "lightning", "hydra", "omegaconf") for m in sys.modules)
"""
    result = subprocess.run([sys.executable, "-c", script], input="red dog runs\n", capture_output=True, text=True,
                            cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == load(exported_reversal).translate(["red dog runs"], beam=2)[0]


def test_the_server_serves_an_exported_model(exported_reversal, sources):
    from fastapi.testclient import TestClient

    from seq2seq.serving.app import create_app
    from seq2seq.serving.batching import stop_if_abandoned
    from seq2seq.serving.models import load_models

    models = load_models([("rev", str(exported_reversal))])
    with TestClient(create_app(models)) as client:
        assert models["rev"].model.model.before_step is stop_if_abandoned  # calls stop between steps
        answer = client.post("/translate", json={"text": sources[:3], "beam": 3, "nbest": 2})
        assert answer.status_code == 200, answer.text
        expected = load(exported_reversal).translate(sources[:3], beam=3, nbest=2)
        assert [[h["text"] for h in t["nbest"]] for t in answer.json()["translations"]] == \
            [[h.text for h in hyps] for hyps in expected]
        described = client.get("/models").json()["models"][0]
        assert described["runtime"] == "onnxruntime" and described["task"] == "translation"
        assert client.post("/translate", json={"text": ["a"], "beam": 0}).status_code == 422
        assert client.post("/translate", json={"text": ["a"], "beems": 2}).status_code == 422
        assert client.post("/translate", json={"text": [sources[0]]}).status_code == 200  # it goes on
