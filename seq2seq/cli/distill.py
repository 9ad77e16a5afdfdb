"""seq2seq-distill: a teacher (a model directory or an ensemble) translates a training corpus's
source side with beam search; the output folder is the student's data folder.

    seq2seq-distill teacher=runs/a/model output=distilled                      # the teacher's own corpus
    seq2seq-distill 'teacher=[a/model,b/model,c/model]' data_dir=data/multi30k output=distilled workers=2

Then train the student on it with the teacher's tokenizers (the command is printed at the end):

    seq2seq-train experiment=multi30k_de_en data.data_dir=distilled \\
        +tokenizer.files.src=a/model/src.spm.model +tokenizer.files.tgt=a/model/src.spm.model
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, ListConfig

from seq2seq.bundle import read_bundle_config
from seq2seq.command import hydra_command, run_as_command
from seq2seq.config import APPS_CONF_DIR
from seq2seq.errors import UserError
from seq2seq.tasks.translation.options import OPTION_NAMES


def teacher_tokenizers(teacher: str) -> dict[str, str]:
    files = read_bundle_config(teacher).get("tokenizers", {})
    return {side: str((Path(teacher) / name).resolve()) for side, name in files.items()}


@run_as_command
def distill_command(cfg: DictConfig) -> None:
    from seq2seq.tasks.translation.distillation import distill, other_splits

    if not logging.getLogger().handlers:  # Hydra's job logging is off: each process logs its chunks itself
        logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    if cfg.teacher is None:
        raise UserError("teacher= is required: a model directory, or a list of them (an ensemble)")
    if cfg.output is None:
        raise UserError("output= is required: the folder to write the distilled corpus into")
    teachers = [str(t) for t in cfg.teacher] if isinstance(cfg.teacher, (list, ListConfig)) else [str(cfg.teacher)]
    trained_on = read_bundle_config(teachers[0]).get("data", {})
    data_dir = cfg.data_dir or trained_on.get("data_dir")
    src_lang, tgt_lang = cfg.src_lang or trained_on.get("src_lang"), cfg.tgt_lang or trained_on.get("tgt_lang")
    if not data_dir or not src_lang or not tgt_lang:
        raise UserError("the teacher's model.json names no data folder or languages: give data_dir=, "
                        "src_lang= and tgt_lang=")
    data_dir = Path(data_dir)
    splits = (list(cfg.splits) if cfg.splits is not None
              else other_splits(data_dir, (src_lang, tgt_lang), cfg.train_prefix))
    options = {name: cfg[name] for name in OPTION_NAMES if cfg.get(name) is not None}
    report = distill(teachers, data_dir, Path(cfg.output), src_lang, tgt_lang, cfg.train_prefix, splits,
                     options, chunk_lines=cfg.chunk_lines, workers=cfg.workers, device=str(cfg.device))
    if report is None:  # a second process of a multi-process run: the first one reports
        return
    dropped = report["dropped"]
    print(f"distilled {report['pairs']} of {report['lines']} pairs into {cfg.output} in {report['seconds']} s "
          f"(dropped: {dropped['empty_source']} empty, {dropped['invalid_utf8']} not UTF-8, "
          f"{dropped['empty_translation']} empty translations; {report['chunks_resumed']} of "
          f"{report['chunks']} chunks resumed)")
    files = teacher_tokenizers(teachers[0])
    src_file, tgt_file = files.get("src"), files.get("tgt", files.get("src"))
    print("train the student with the teacher's tokenizers:\n"
          f"  seq2seq-train data.data_dir={Path(cfg.output).resolve()} data.src_lang={src_lang} "
          f"data.tgt_lang={tgt_lang} +tokenizer.files.src={src_file} +tokenizer.files.tgt={tgt_file} ...")


@hydra_command(APPS_CONF_DIR, "distill")
def main(cfg: DictConfig) -> None:
    distill_command(cfg)


if __name__ == "__main__":
    main()
