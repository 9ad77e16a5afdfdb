"""Data-parallel training with Lightning's DDP over gloo (2 CPU processes)."""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from seq2seq.tasks.translation.data import TranslationDataModule
from tests.helpers import TINY_REVERSAL, make_reversal_corpus, run


def final_validation(run_dir: Path) -> dict[str, float]:
    rows = [r for r in csv.DictReader((run_dir / "logs" / "metrics.csv").open()) if r.get("val/loss")]
    return {key: float(value) for key, value in rows[-1].items() if key.startswith("val/") or key == "step"}


@pytest.mark.slow
def test_two_ddp_processes_match_one_process_with_the_same_global_batch(tmp_path):
    # 600 pairs in batches of <= 400 tokens make 10 batches: 5 steps of 2 batches either way
    # (DDP: one batch per rank, gradients averaged; one process: 2 batches accumulated), so both
    # runs see the same batches in the same steps. Dropout is 0, so the only difference left is
    # the order of floating-point additions in the gradient average.
    make_reversal_corpus(tmp_path / "corpus", {"train": 600, "val": 41, "test": 10})
    common = [*TINY_REVERSAL, "data.data_dir=corpus", "trainer.max_epochs=2", "evaluate_test=false"]
    run(["seq2seq-train", *common, "trainer=ddp_cpu", "trainer.devices=2", "hydra.run.dir=ddp"], cwd=tmp_path)
    run(["seq2seq-train", *common, "trainer.accumulate_grad_batches=2", "hydra.run.dir=single"], cwd=tmp_path)

    ddp, single = final_validation(tmp_path / "ddp"), final_validation(tmp_path / "single")
    assert ddp["step"] == single["step"] == 9  # 5 optimizer steps an epoch, 0-based
    # Every one of the 41 validation sentences was decoded once (duplicates raise in the system).
    assert ddp["val/sentences"] == single["val/sentences"] == 41
    assert ddp["val/loss"] == pytest.approx(single["val/loss"], rel=1e-5)
    assert ddp["val/bleu"] == pytest.approx(single["val/bleu"], abs=0.01)
    assert ddp["val/chrf"] == pytest.approx(single["val/chrf"], abs=0.01)
    weights = [torch.load(tmp_path / name / "checkpoints" / "last.ckpt", map_location="cpu",
                          weights_only=True)["state_dict"] for name in ("ddp", "single")]
    for key, value in weights[0].items():
        torch.testing.assert_close(value, weights[1][key], rtol=1e-4, atol=1e-5, msg=key)
    # Only rank 0 exports the model.
    assert (tmp_path / "ddp" / "model" / "model.json").is_file()


@pytest.mark.parametrize("world", [2, 3])
def test_validation_shards_cover_every_sentence_once(tmp_path, world):
    make_reversal_corpus(tmp_path / "corpus", {"train": 50, "val": 23}, seed=1)
    datamodule = TranslationDataModule(
        data_dir=str(tmp_path / "corpus"), src_lang="src", tgt_lang="tgt", valid_prefix="val",
        tokenizer={"vocab_size": 24, "model_type": "word", "joint": False}, cache_dir=str(tmp_path / "cache"),
        valid_max_tokens=10_000)
    datamodule.prepare_data()
    datamodule.setup("fit")
    seen = []
    for rank in range(world):
        datamodule.trainer = SimpleNamespace(world_size=world, global_rank=rank)
        batches = [batch.indices.tolist() for batch in datamodule.val_dataloader()]
        assert batches, f"rank {rank} got no validation batch"
        seen.extend(i for batch in batches for i in batch)
    assert sorted(seen) == list(range(23))
