"""The decoding options type and the front ends derived from it: configs, Python API, server, prompt."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from seq2seq import Translator
from seq2seq.config import APPS_CONF_DIR, CONF_DIR, register_configs
from seq2seq.errors import UserError
from seq2seq.serving.app import TranslateBody, create_app
from seq2seq.serving.models import load_models
from seq2seq.tasks.translation.options import FIELDS, OPTION_NAMES, DecodingOptions, prompt_settings
from tests.helpers import run_in_process

SENTENCES = ["red dog runs", "big tree house river sun", "cat"]


def composed(config_dir: str, name: str, overrides: list[str]):
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
        return compose(name, overrides=overrides)


def test_every_option_reaches_every_front_end_with_the_types_default():
    defaults = DecodingOptions().as_dict()
    # Training records the defaults (model.json's `decoding`); translate and evaluate leave every
    # option unset, meaning "the model's".
    assert dict(composed(CONF_DIR, "train", [])["decoding"]) == defaults
    for app in ("translate", "evaluate"):
        cfg = composed(APPS_CONF_DIR, app, [])
        assert {name: cfg[name] for name in OPTION_NAMES} == dict.fromkeys(OPTION_NAMES)
    assert composed(APPS_CONF_DIR, "translate", ["beam=3", "shortlist=false"])["beam"] == 3
    # The server's request body: every per-request option, absent = null = the model's default.
    request = TranslateBody.model_fields
    for name, spec in FIELDS.items():
        if spec.metadata["per_request"]:
            assert request[name].default is None and "default: the model's" in request[name].description
        else:
            assert name not in request
    # The prompt: one :command per option that has one, parsing into the option's type.
    commands = prompt_settings()
    assert {name for name, _ in commands.values()} == {n for n, s in FIELDS.items() if s.metadata["command"]}
    assert commands["lp"][0] == "length_penalty" and commands["lp"][1]("0.5") == 0.5
    assert commands["sample"][1]("on") is True


@pytest.mark.parametrize("changes, message", [
    ({"beam": 0}, "beam=0 must be at least 1"),
    ({"beam": 2, "nbest": 3}, "nbest=3 must be between 1 and beam=2"),
    ({"beam": "five"}, "beam='five' must be an integer"),
    ({"top_p": 1.5}, "top_p=1.5 must be in (0, 1]"),
    ({"temperature": 0}, "temperature=0.0 must be greater than 0"),
    ({"no_repeat_ngram_size": -1}, "no_repeat_ngram_size=-1 must be 0 (off) or positive"),
    ({"shortlist": "maybe"}, "shortlist='maybe' must be one of auto, true, false"),
    ({"sampling": "yes"}, "sampling='yes' must be true or false"),
    ({"beams": 4}, "unknown decoding option 'beams'"),
])
def test_bad_values_are_one_line_naming_the_option(changes, message):
    with pytest.raises(UserError) as error:
        DecodingOptions().updated(changes)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_unset_values_keep_and_shortlist_takes_yaml_booleans():
    options = DecodingOptions(beam=4).updated(beam=None, nbest=2, shortlist=False)
    assert (options.beam, options.nbest, options.shortlist) == (4, 2, "false")
    assert DecodingOptions().updated(shortlist=True).shortlist == "true"
    assert dataclasses.replace(options, sampling=True, nbest=8).nbest == 8  # samples may exceed the beam


@pytest.fixture(scope="module")
def nbest_model(trained_reversal, tmp_path_factory) -> Path:
    """The reversal model whose model.json says: beam 3, 2 translations per sentence."""
    directory = tmp_path_factory.mktemp("defaults") / "model"
    shutil.copytree(trained_reversal / "run" / "model", directory)
    config = json.loads((directory / "model.json").read_text())
    config["decoding"] |= {"beam": 3, "nbest": 2}
    (directory / "model.json").write_text(json.dumps(config))
    return directory


def test_the_models_decoding_block_is_the_default_of_the_api_the_cli_and_the_server(nbest_model, tmp_path):
    translator = Translator.load(nbest_model, device="cpu")
    assert (translator.default_options.beam, translator.default_options.nbest) == (3, 2)
    lists = translator.translate(SENTENCES)  # nbest 2 by the model's default: n-best lists
    assert [len(hyps) for hyps in lists] == [2, 2, 2]
    assert translator.translate(SENTENCES, nbest=1) == [hyps[0].text for hyps in lists]

    (tmp_path / "in.txt").write_text("\n".join(SENTENCES) + "\n")
    rows = run_in_process(["seq2seq-translate", f"model={nbest_model}", "input=in.txt"], cwd=tmp_path)
    assert rows.returncode == 0, rows.stderr
    lines = rows.stdout.splitlines()
    assert [line.split("\t")[:2] for line in lines] == [[str(i), str(r)] for i in range(3) for r in range(2)]
    plain = run_in_process(["seq2seq-translate", f"model={nbest_model}", "input=in.txt", "nbest=1"], cwd=tmp_path)
    assert plain.stdout.splitlines() == [hyps[0].text for hyps in lists]

    with TestClient(create_app(load_models([(None, str(nbest_model))], device="cpu"))) as client:
        answer = client.post("/translate", json={"text": SENTENCES}).json()
        assert [len(item["nbest"]) for item in answer["translations"]] == [2, 2, 2]
        assert [item["text"] for item in answer["translations"]] == [hyps[0].text for hyps in lists]
        single = client.post("/translate", json={"text": SENTENCES, "nbest": 1}).json()["translations"]
        assert all("nbest" not in item for item in single)
        bad = client.post("/translate", json={"text": SENTENCES, "beam": 1})  # nbest 2 > beam 1
        assert bad.status_code == 422 and bad.json()["field"] == "nbest"


def test_a_bad_default_in_model_json_is_one_line(nbest_model, tmp_path):
    broken = tmp_path / "model"
    shutil.copytree(nbest_model, broken)
    config = json.loads((broken / "model.json").read_text())
    config["decoding"]["beam"] = 0
    (broken / "model.json").write_text(json.dumps(config))
    result = run_in_process(["seq2seq-translate", f"model={broken}", "input=-"], cwd=tmp_path, input="cat\n")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {broken}/model.json: decoding defaults: "
                                                  "beam=0 must be at least 1"]
