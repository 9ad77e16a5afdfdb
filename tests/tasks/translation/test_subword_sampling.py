"""Subword regularization: the training split is segmented afresh each epoch (seeded), the text
is unchanged by it, and validation is never sampled."""

from __future__ import annotations

import pytest

from seq2seq.errors import UserError
from seq2seq.tasks.translation.data import TranslationDataModule
from seq2seq.tokenizer import SubwordSampling
from tests.helpers import make_reversal_corpus

TOKENIZER = {"vocab_size": 40, "model_type": "unigram", "joint": False}
SAMPLING = {"alpha": 0.1, "nbest_size": 16}


def datamodule(tmp_path, seed=7, sampling=SAMPLING, **settings) -> TranslationDataModule:
    corpus = tmp_path / "corpus"
    if not corpus.exists():
        make_reversal_corpus(corpus, {"train": 300, "val": 40}, seed=3)
    module = TranslationDataModule(
        data_dir=str(corpus), src_lang="src", tgt_lang="tgt", tokenizer=dict(TOKENIZER, sampling=sampling),
        cache_dir=str(tmp_path / "cache"), max_tokens=300, seed=seed, **settings)
    module.prepare_data()
    module.setup("fit")
    return module


def epoch_segmentations(module: TranslationDataModule, epoch: int) -> dict[int, tuple[tuple[int, ...], ...]]:
    """corpus line -> (source ids, target ids) as the training loader hands them out in `epoch`."""
    loader = module.train_dataloader()
    loader.sampler.set_epoch(epoch)
    seen = {}
    for batch in loader:
        for row, line in enumerate(batch.indices.tolist()):
            src = tuple(i for i in batch.src[row].tolist() if i != 0)
            tgt = tuple(i for i in batch.tgt_out[row].tolist() if i != 0)[:-1]  # without EOS
            seen[line] = (src, tgt)
    return seen


def test_each_epoch_samples_other_segmentations_of_the_same_text(tmp_path):
    module = datamodule(tmp_path)
    first, second = epoch_segmentations(module, 0), epoch_segmentations(module, 1)
    assert first.keys() == second.keys() == set(range(300))  # every pair once per epoch
    changed = sum(first[line][0] != second[line][0] for line in first)
    assert changed > 150, f"only {changed} of 300 source sentences were segmented differently"
    fixed = module.train_set.src_ids
    assert sum(first[line][0] != tuple(fixed[line]) for line in first) > 150
    # A sampled segmentation spells the same sentence.
    src_lines, tgt_lines = module.train_set.src_lines, module.train_set.tgt_lines
    for line, (src, tgt) in list(first.items())[:50]:
        assert module.src_tokenizer.decode([src])[0] == src_lines[line]
        assert module.tgt_tokenizer.decode([tgt])[0] == tgt_lines[line]


def test_the_same_seed_draws_the_same_segmentations_and_another_seed_others(tmp_path):
    again = epoch_segmentations(datamodule(tmp_path), 1)
    assert epoch_segmentations(datamodule(tmp_path), 1) == again
    other = epoch_segmentations(datamodule(tmp_path, seed=8), 1)
    assert sum(other[line][0] != again[line][0] for line in again) > 150


def test_validation_is_never_sampled(tmp_path):
    module = datamodule(tmp_path)
    assert module.valid_set.src_ids == module.src_tokenizer.encode(module.valid_srcs)
    for _ in range(2):
        for batch in module.val_dataloader():
            for row, line in enumerate(batch.indices.tolist()):
                src = [i for i in batch.src[row].tolist() if i != 0]
                assert src == module.valid_set.src_ids[line]


def test_sampling_off_hands_out_the_fixed_segmentation(tmp_path):
    module = datamodule(tmp_path, sampling={"alpha": None})
    assert epoch_segmentations(module, 0) == epoch_segmentations(module, 1)
    third = epoch_segmentations(module, 2)
    assert all(src == tuple(module.train_set.src_ids[line]) for line, (src, _) in third.items())


@pytest.mark.parametrize("settings, model_type, message", [
    ({"alpha": 0.1, "nbest_size": 1}, "unigram", "nbest_size=1 must be a count of 2 or more"),
    ({"alpha": 0.1, "nbest_size": -1}, "unigram", "nbest_size=-1 must be a count of 2 or more"),
    ({"alpha": -0.5}, "unigram", "alpha=-0.5 must be a number above 0"),
    ({"alpha": 0.1}, "bpe", "needs a unigram tokenizer"),
    ({"alpha": 0.1}, "word", "needs a unigram tokenizer"),
    ({"alpha": 0.1, "nbest": 5}, "unigram", "no setting 'nbest'"),
])
def test_bad_sampling_settings_are_one_line_errors(settings, model_type, message):
    with pytest.raises(UserError, match=message):
        SubwordSampling.from_settings(settings, model_type)


def test_a_memory_mapped_corpus_refuses_sampling(tmp_path):
    with pytest.raises(UserError, match="needs data.storage=memory"):
        datamodule(tmp_path, storage="memmap")


def test_the_other_tasks_refuse_sampling_and_accept_it_off():
    from seq2seq.tokenizer import refuse_sampling

    refuse_sampling({"alpha": None, "nbest_size": 16}, "unigram")
    with pytest.raises(UserError, match="is for translation"):
        refuse_sampling({"alpha": 0.1}, "unigram")


def test_under_ddp_each_rank_draws_for_its_own_shard_what_one_process_would(tmp_path):
    from seq2seq.batching import TokenBatchSampler
    from seq2seq.tasks.translation.subword_sampling import EpochTaggedBatches

    module = datamodule(tmp_path)
    dataset = module.train_set

    def segmentations(world: int, rank: int) -> dict[int, tuple[int, ...]]:
        sampler = EpochTaggedBatches(TokenBatchSampler(dataset.src_lengths, dataset.tgt_lengths, 300, shuffle=True,
                                                       seed=7, num_replicas=world, rank=rank))
        sampler.set_epoch(3)
        seen = {}
        for key in sampler:
            batch = dataset[key]
            for row, line in enumerate(batch.indices.tolist()):
                seen[line] = tuple(i for i in batch.src[row].tolist() if i != 0)
        return seen

    alone, first, second = segmentations(1, 0), segmentations(2, 0), segmentations(2, 1)
    assert not first.keys() & second.keys()  # each rank its own shard
    assert first | second == alone  # and the draws a single process would have made for those batches
