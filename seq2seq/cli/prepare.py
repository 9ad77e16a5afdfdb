"""seq2seq-prepare: encode a training corpus once into memory-mapped token arrays.

    seq2seq-prepare data=parallel data.data_dir=corpus data.src_lang=de data.tgt_lang=en

Takes the same configuration (and overrides) as seq2seq-train, so training with
data.storage=memmap finds the prepared corpus instead of encoding it again.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from seq2seq.command import hydra_command, run_as_command
from seq2seq.config import CONF_DIR, build
from seq2seq.errors import UserError
from seq2seq.tasks.translation.corpus import read_index


@run_as_command
def prepare(cfg: DictConfig) -> None:
    if cfg.task.name != "translation":
        raise UserError(f"seq2seq-prepare prepares parallel corpora; task.name={cfg.task.name!r} reads its text whole")
    datamodule = build(cfg.data, tokenizer=OmegaConf.to_container(cfg.tokenizer, resolve=True),
                       storage="memmap", _convert_="all")
    datamodule.prepare_data()
    src_tokenizer, tgt_tokenizer = datamodule._tokenizers()
    directory = datamodule.prepared_dir(src_tokenizer, tgt_tokenizer)
    index = read_index(directory)
    print(f"{directory}: {index['pairs']:,} pairs, {index['tokens']['src']:,} source and "
          f"{index['tokens']['tgt']:,} target pieces")
    if cfg.data.get("storage") != "memmap":
        print("train on it with data.storage=memmap")


@hydra_command(CONF_DIR, "prepare")
def main(cfg: DictConfig) -> None:
    prepare(cfg)


if __name__ == "__main__":
    main()
