"""The character language model: streams, truncated BPTT, scoring, sampling, Unicode."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from seq2seq.bundle import save_bundle
from seq2seq.errors import UserError
from seq2seq.sampling import sample_tokens
from seq2seq.tasks.language_model.api import Generator, StopFilter, TextCodec
from seq2seq.tasks.language_model.data import TextWindows
from seq2seq.tasks.language_model.model import (
    LanguageModel,
    score_streams,
    scoring_streams,
    stream_batches,
)
from seq2seq.tasks.language_model.system import LanguageModelSystem
from seq2seq.tokenizer import PAD_ID, UNK_ID
from seq2seq.training import Optimization
from tests.helpers import UNICODE_TEXT, char_datamodule, tiny_lm


@pytest.fixture
def codec_and_model(tmp_path):
    data = char_datamodule(tmp_path, UNICODE_TEXT)
    model_dir = save_bundle(tmp_path / "model", tiny_lm(data.tokenizer.vocab_size), "lstm_lm",
                            data.tokenizer_files())
    return data, Generator.load(model_dir, device="cpu")


# ------------------------------------------------------------------ characters
def test_character_vocabulary_round_trips_any_unicode(tmp_path):
    data = char_datamodule(tmp_path, UNICODE_TEXT)
    codec = TextCodec(data.tokenizer)
    ids = codec.encode(UNICODE_TEXT)
    assert len(ids) == len(UNICODE_TEXT)  # one id per character, newlines and repeated spaces too
    assert codec.decode(ids) == UNICODE_TEXT
    assert UNK_ID not in ids


def test_unknown_characters_map_to_unk_and_generation_goes_on(codec_and_model):
    _, generator = codec_and_model
    ids = generator.codec.encode("zebra 🦓 Ω")  # none of z, 🦓, Ω is in the training text
    assert ids.count(UNK_ID) >= 3
    text = generator.generate("zebra 🦓 Ω", max_chars=40, seed=0)
    assert len(text) == 40 and "\ufffd" not in text  # the unknown id is never drawn
    assert generator.score("🦓🦓 Ω zebra")["unknown"] >= 2


def test_japanese_text_trains_and_generates(tmp_path):
    japanese = "".join(f"彼は{n}時に駅へ行きました。\n私は日本語を勉強しています。\n" for n in range(200))
    data = char_datamodule(tmp_path, japanese, batch_streams=8, bptt=32)
    model = tiny_lm(data.tokenizer.vocab_size, hidden_size=48)
    system = LanguageModelSystem(model, Optimization(lr=0.02, scheduler="none"), sample_every_n_steps=0)
    trainer = L.Trainer(max_epochs=4, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu")
    trainer.fit(system, datamodule=data)
    assert trainer.callback_metrics["val/loss"] < 1.5
    model_dir = save_bundle(tmp_path / "model", model, "lstm_lm", data.tokenizer_files())
    text = Generator.load(model_dir, device="cpu").generate("私は", max_chars=60, greedy=True)
    assert "日本語を勉強しています" in text


# ---------------------------------------------------------------------- streams
def test_streams_are_contiguous_and_windows_shift_by_one():
    ids = torch.arange(4, 4 + 103)
    streams = stream_batches(ids, 4)
    assert streams.shape == (4, 25)
    assert torch.equal(streams.reshape(-1), ids[:100])  # row s continues where row s-1 ends
    windows = TextWindows(streams, bptt=7)
    seen_inputs = torch.cat([windows[i][0] for i in range(len(windows))], dim=1)
    seen_targets = torch.cat([windows[i][1] for i in range(len(windows))], dim=1)
    assert torch.equal(seen_inputs, streams[:, :-1])
    assert torch.equal(seen_targets, streams[:, 1:])


def test_ranks_read_distinct_streams_that_cover_the_text(tmp_path):
    data = char_datamodule(tmp_path, UNICODE_TEXT, batch_streams=3)

    class FakeTrainer:
        def __init__(self, rank):
            self.world_size, self.global_rank = 2, rank

    rows = []
    for rank in (0, 1):
        data.trainer = FakeTrainer(rank)
        rows.append(data.train_dataloader().dataset.streams)
    all_streams = stream_batches(data.train_ids, 6)
    assert torch.equal(torch.cat(rows).sort(dim=0).values, all_streams.sort(dim=0).values)
    assert torch.equal(rows[0], all_streams[0::2]) and torch.equal(rows[1], all_streams[1::2])


def test_scoring_covers_every_character_but_the_first_once():
    ids = torch.randint(4, 30, (1001,))
    for streams in (1, 3, 16):
        data = scoring_streams(ids, streams, warmup=5)
        scored = data.targets[data.targets != PAD_ID]
        assert torch.equal(scored, ids[1:])
        assert data.scored_tokens == 1000
        # Each row after the first reads the text just before it as warm-up.
        for s in range(1, data.inputs.size(0)):
            assert torch.equal(data.warmup[s], ids[s * data.inputs.size(1) - 5: s * data.inputs.size(1)])


def test_single_stream_scoring_is_the_plain_likelihood():
    model = tiny_lm(30).eval()
    ids = torch.randint(4, 30, (300,))
    total, count = score_streams(model, scoring_streams(ids, streams=1), chunk=64)
    with torch.no_grad():
        logits, _ = model(ids[:-1].unsqueeze(0))
    expected = F.cross_entropy(logits[0], ids[1:], reduction="sum")
    assert count == 299
    assert total == pytest.approx(float(expected), rel=1e-5)


# ---------------------------------------------------------------- truncated BPTT
def test_chunks_with_carried_state_equal_one_pass():
    model = tiny_lm(30).eval()
    tokens = torch.randint(4, 30, (3, 40))
    whole, _ = model(tokens)
    state, parts = None, []
    for start in range(0, 40, 16):
        logits, state = model(tokens[:, start:start + 16], state)
        parts.append(logits)
    assert torch.allclose(torch.cat(parts, dim=1), whole, atol=1e-6)


@pytest.mark.parametrize("bf16", [False, True])
def test_token_by_token_generation_steps_equal_one_pass(bf16):
    from seq2seq.precision import cpu_runs_bf16_lstm

    if bf16 and not cpu_runs_bf16_lstm()[0]:
        pytest.skip(cpu_runs_bf16_lstm()[1])
    model = tiny_lm(30).eval()
    tokens = torch.randint(4, 30, (20, 12))  # 20 rows: under bf16 the fused kernel takes the steps
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        whole, _ = model(tokens)
        logits, state = model(tokens[:, :1])
        steps = [logits]
        for t in range(1, 12):
            logits, state = model(tokens[:, t:t + 1], state)
            steps.append(logits)
    assert torch.allclose(torch.cat(steps, dim=1).float(), whole.float(), atol=0.05 if bf16 else 1e-5)


class StateRecorder:
    """Forward hooks on a model: what state each call started from and ended with."""

    def __init__(self, model: LanguageModel) -> None:
        self.calls: list[dict] = []
        model.register_forward_hook(self.hook, with_kwargs=True)

    def hook(self, module, args, kwargs, output):
        state = args[1] if len(args) > 1 else kwargs.get("state")
        self.calls.append({"training": module.training, "batch": args[0].size(0),
                           "state_in": None if state is None else tuple(t.clone() for t in state),
                           "state_out": tuple(t.detach().clone() for t in output[1])})


def test_training_carries_state_across_batches_and_resets_it_per_epoch_and_for_validation(tmp_path):
    data = char_datamodule(tmp_path, UNICODE_TEXT, batch_streams=4, bptt=16, valid_streams=3)
    model = tiny_lm(data.tokenizer.vocab_size)
    recorder = StateRecorder(model)
    system = LanguageModelSystem(model, Optimization(lr=0.01, scheduler="none"), sample_every_n_steps=0)
    trainer = L.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", num_sanity_val_steps=0,
                        val_check_interval=5)  # a validation in the middle of each epoch too
    trainer.fit(system, datamodule=data)
    windows = len(data.train_dataloader().dataset)
    train_calls = [c for c in recorder.calls if c["training"]]
    assert len(train_calls) == 2 * windows
    for epoch in range(2):
        calls = train_calls[epoch * windows:(epoch + 1) * windows]
        assert calls[0]["state_in"] is None  # a fresh state at each epoch start
        for before, after in zip(calls, calls[1:]):
            # Each window starts from the previous window's final state, detached from its graph,
            # even across the mid-epoch validation.
            assert after["state_in"] is not None
            assert not after["state_in"][0].requires_grad
            assert torch.equal(after["state_in"][0], before["state_out"][0])
            assert torch.equal(after["state_in"][1], before["state_out"][1])
    validation_starts = [c for i, c in enumerate(recorder.calls)
                         if not c["training"] and (i == 0 or recorder.calls[i - 1]["training"])]
    assert len(validation_starts) >= 2
    for call in validation_starts:
        # Validation begins with the warm-up rows from a zero state, never the training state.
        assert call["batch"] == 3
        assert float(call["state_in"][0].abs().sum()) == 0.0


# --------------------------------------------------------------------- sampling
def test_near_zero_temperature_and_top_k_1_equal_greedy(codec_and_model):
    _, generator = codec_and_model
    greedy = generator.generate("ROMEO: ", max_chars=80, greedy=True)
    assert generator.generate("ROMEO: ", max_chars=80, temperature=1e-4, seed=3) == greedy
    assert generator.generate("ROMEO: ", max_chars=80, top_k=1, seed=4) == greedy


def test_top_p_keeps_exactly_the_smallest_set_reaching_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    log_probs = probs.log().expand(4000, -1)
    generator = torch.Generator().manual_seed(0)
    for top_p, kept in ((0.4, {0}), (0.7, {0, 1}), (0.85, {0, 1, 2}), (0.97, {0, 1, 2, 3})):
        drawn = set(sample_tokens(log_probs, 1.0, 0, top_p, generator).tolist())
        assert drawn == kept, top_p


def test_same_seed_same_text_and_samples_differ(codec_and_model):
    _, generator = codec_and_model
    first = generator.generate("Ça", max_chars=100, temperature=1.0, seed=7)
    assert generator.generate("Ça", max_chars=100, temperature=1.0, seed=7) == first
    assert generator.generate("Ça", max_chars=100, temperature=1.0, seed=8) != first
    batch = generator.generate("Ça", max_chars=100, num_samples=3, seed=7)
    assert len(batch) == 3 and len(set(batch)) == 3 and all(len(t) == 100 for t in batch)


@pytest.mark.parametrize("options, message", [
    ({"temperature": -1}, "temperature=-1"), ({"top_p": 1.5}, "top_p=1.5"), ({"top_k": -2}, "top_k=-2"),
    ({"max_chars": -5}, "max_chars=-5"), ({"num_samples": 0}, "num_samples=0"),
])
def test_invalid_sampling_settings_are_user_errors(codec_and_model, options, message):
    _, generator = codec_and_model
    with pytest.raises(UserError, match=message):
        generator.generate("x", **({"max_chars": 5} | options))


def test_stop_strings_end_a_sample_even_across_steps():
    pieces = list("abc--de-XYZ tail")
    stop = StopFilter(["-XY", "zzz"])
    out = "".join(stop.feed(p) for p in pieces if not stop.stopped) + stop.flush()
    assert out == "abc--de"
    plain = StopFilter([])
    assert "".join(plain.feed(p) for p in pieces) + plain.flush() == "abc--de-XYZ tail"


def test_generation_stops_before_a_stop_string(codec_and_model):
    _, generator = codec_and_model
    full = generator.generate("ROMEO", max_chars=200, temperature=1.0, seed=5)
    stop = full[60:62]
    cut = generator.generate("ROMEO", max_chars=200, temperature=1.0, seed=5, stop=["never there", stop])
    assert cut == full[: full.index(stop)]
    assert len(cut) <= 60


def test_tied_embeddings_need_equal_sizes():
    with pytest.raises(UserError, match="tie_embeddings"):
        LanguageModel(30, embed_dim=16, hidden_size=32, tie_embeddings=True)
    tied = LanguageModel(30, embed_dim=32, hidden_size=32, tie_embeddings=True)
    assert tied.output.weight is tied.embedding.weight
    with torch.no_grad():
        assert math.isfinite(float(tied(torch.randint(4, 30, (2, 5)))[0].sum()))
