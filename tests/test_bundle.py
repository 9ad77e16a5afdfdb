import json

import pytest
import torch

from seq2seq.bundle import load_bundle, load_state_dict, save_bundle
from seq2seq.errors import UserError
from seq2seq.tokenizer import SentencePieceSettings, train_or_load
from tests.helpers import Exploit, make_reversal_corpus, random_batch, tiny_model


@pytest.fixture
def tokenizer_file(tmp_path):
    corpus = make_reversal_corpus(tmp_path / "corpus", {"train": 300})
    return train_or_load([corpus / "train.src"], tmp_path / "cache", SentencePieceSettings(vocab_size=40)).model_file


@pytest.fixture
def bundle_dir(tmp_path, tokenizer_file):
    model = tiny_model("bahdanau", src_vocab_size=40, tgt_vocab_size=40)
    return save_bundle(tmp_path / "model", model, "seq2seq", {"src": tokenizer_file, "tgt": tokenizer_file})


def test_round_trip_gives_the_same_model(bundle_dir):
    original = tiny_model("bahdanau", src_vocab_size=40, tgt_vocab_size=40)
    loaded = load_bundle(bundle_dir)
    assert sorted(p.name for p in bundle_dir.iterdir()) == ["model.json", "src.spm.model", "weights.pt"]
    src, lengths = random_batch([4, 2])
    tgt = torch.randint(4, 40, (2, 3))
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(src, lengths, tgt), original(src, lengths, tgt))
    assert loaded.tokenizers["src"].encode(["a dog"]) == loaded.tokenizers["tgt"].encode(["a dog"])


def test_planted_pickle_is_refused_without_running(bundle_dir, tmp_path):
    marker = tmp_path / "pwned"
    Exploit.marker = str(marker)
    state = torch.load(bundle_dir / "weights.pt", weights_only=True)
    state["payload"] = Exploit()
    torch.save(state, bundle_dir / "weights.pt")
    with pytest.raises(UserError, match="refused to load"):
        load_bundle(bundle_dir)
    assert not marker.exists()
    # The payload is live: an unrestricted unpickler runs it, so the check above can fail.
    torch.load(bundle_dir / "weights.pt", weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "weights.pt").unlink(), "weights file not found"),
    (lambda d: (d / "weights.pt").write_bytes((d / "weights.pt").read_bytes()[:100]), "corrupt or truncated"),
    (lambda d: (d / "model.json").unlink(), "no model.json"),
    (lambda d: (d / "model.json").write_text("{not json"), "not valid JSON"),
    (lambda d: (d / "src.spm.model").unlink(), "tokenizer file src.spm.model is missing"),
    (lambda d: _edit(d, format_version=99), "newer than this toolkit"),
    (lambda d: _edit(d, model_type="os.system"), "unknown model type"),
    (lambda d: _edit(d, tokenizers={"src": "../../etc/passwd"}), "must be a file name"),
    (lambda d: _edit_model(d, embed_dim=16), "weights do not match"),
])
def test_damaged_bundles_give_one_clear_error(bundle_dir, damage, message):
    damage(bundle_dir)
    with pytest.raises(UserError, match=message):
        load_bundle(bundle_dir)


def _edit(directory, **changes):
    config = json.loads((directory / "model.json").read_text())
    config.update(changes)
    (directory / "model.json").write_text(json.dumps(config))


def _edit_model(directory, **changes):
    config = json.loads((directory / "model.json").read_text())
    config["model_config"].update(changes)
    (directory / "model.json").write_text(json.dumps(config))


def test_missing_directory(tmp_path):
    with pytest.raises(UserError, match="model directory not found"):
        load_bundle(tmp_path / "nothing")
    with pytest.raises(UserError, match="weights file not found"):
        load_state_dict(tmp_path / "nothing.pt")
