"""seq2seq-shortlist: build the vocabulary shortlist of a translation model directory.

    seq2seq-shortlist model=outputs/run/model                    # from the corpus it was trained on
    seq2seq-shortlist model=outputs/run/model src=a.de tgt=a.en  # from another parallel corpus

Training writes one into the model directory already (task.shortlist); this is for directories
made before, or to rebuild with other settings. The file is replaced atomically.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from omegaconf import DictConfig

from seq2seq.command import hydra_command, run_as_command
from seq2seq.config import APPS_CONF_DIR
from seq2seq.errors import UserError


def corpus_files(cfg: DictConfig, config: dict) -> tuple[Path, Path]:
    if (cfg.src is None) != (cfg.tgt is None):
        raise UserError("give both src= and tgt= (a parallel corpus), or neither (the training corpus)")
    if cfg.src is not None:
        return Path(cfg.src), Path(cfg.tgt)
    data = config.get("data") or {}
    if not data.get("data_dir") or not data.get("src_lang") or not data.get("tgt_lang"):
        raise UserError(f"{cfg.model}: model.json does not say where its training data is; give src= and tgt=")
    prefix = data.get("train_prefix", "train")
    root = Path(data["data_dir"])
    return root / f"{prefix}.{data['src_lang']}", root / f"{prefix}.{data['tgt_lang']}"


@run_as_command
def shortlist_command(cfg: DictConfig) -> Path:
    if cfg.model is None:
        raise UserError("model= is required: the translation model directory")
    from seq2seq.bundle import read_bundle_config
    from seq2seq.tasks.translation.corpus import encode_parallel
    from seq2seq.tasks.translation.shortlist import SHORTLIST_FILE, build_from_dataset
    from seq2seq.text import read_parallel
    from seq2seq.tokenizer import Tokenizer

    model_dir = Path(cfg.model)
    config = read_bundle_config(model_dir)
    if config.get("model_type") != "seq2seq":
        raise UserError(f"{model_dir} holds a {config.get('model_type')} model; shortlists are for translation models")
    tokenizers = config.get("tokenizers") or {}
    src_tokenizer, tgt_tokenizer = (Tokenizer(model_dir / tokenizers[role]) for role in ("src", "tgt"))
    src_path, tgt_path = corpus_files(cfg, config)
    start = time.perf_counter()
    src_lines, tgt_lines = read_parallel(src_path, tgt_path)
    dataset = encode_parallel(src_lines, tgt_lines, src_tokenizer, tgt_tokenizer, cfg.max_len, name=str(src_path))
    settings = {"frequent": cfg.frequent, "per_source": cfg.per_source, "iterations": cfg.iterations,
                "method": cfg.method}
    shortlist = build_from_dataset(dataset, src_tokenizer, tgt_tokenizer, settings)
    shortlist.save(model_dir / SHORTLIST_FILE)
    print(f"{model_dir / SHORTLIST_FILE}: built from {len(dataset):,} pairs of {src_path} in "
          f"{time.perf_counter() - start:.1f} s", file=sys.stderr)
    return model_dir / SHORTLIST_FILE


@hydra_command(APPS_CONF_DIR, "shortlist")
def main(cfg: DictConfig) -> None:
    shortlist_command(cfg)


if __name__ == "__main__":
    main()
