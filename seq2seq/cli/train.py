"""seq2seq-train: compose the config, train with Lightning, export the model, score the test set.

    seq2seq-train experiment=multi30k_de_en model.attention=luong_general trainer.max_epochs=20
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from seq2seq.bundle import load_state_dict, save_bundle
from seq2seq.cli.common import CONF_DIR, user_errors_to_exit
from seq2seq.cli.evaluate import format_scores
from seq2seq.data import read_parallel
from seq2seq.errors import UserError
from seq2seq.metrics import score_corpus
from seq2seq.systems import TranslationSystem
from seq2seq.translator import Translator

log = logging.getLogger("seq2seq.train")


def build_callbacks(cfg: DictConfig) -> list[L.Callback]:
    return [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]


def build_loggers(cfg: DictConfig) -> list:
    return [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]


class LastValidationStep(L.Callback):
    """Remembers the optimizer step of the last validation run."""

    def __init__(self) -> None:
        self.step = -1

    def on_validation_end(self, trainer, pl_module) -> None:
        self.step = trainer.global_step


def export_model(trainer: L.Trainer, system: TranslationSystem, datamodule, run_dir: Path,
                 cfg: DictConfig, last_validation: LastValidationStep) -> Path:
    """Write `<run_dir>/model` from the best validated weights.

    Training can stop between validations (max_time, max_steps, Ctrl-C); the final weights are
    then validated once more and kept if they beat the best checkpoint.
    """
    checkpoint = trainer.checkpoint_callback
    best_path = checkpoint.best_model_path if checkpoint else ""
    best_score = checkpoint.best_model_score if checkpoint else None
    final_bleu = None
    if trainer.global_step != last_validation.step:
        results = trainer.validate(system, datamodule=datamodule, verbose=False)
        final_bleu = results[0].get("val/bleu") if results else None
    if best_path and best_score is not None and (final_bleu is None or float(best_score) >= final_bleu):
        state = load_state_dict(best_path)["state_dict"]
        system.model.load_state_dict(
            {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
        chosen = float(best_score)
        log.info("exporting best checkpoint %s (val BLEU %.2f)", best_path, chosen)
    else:
        chosen = final_bleu
        log.info("exporting final weights (val BLEU %s)", "n/a" if chosen is None else f"{chosen:.2f}")
    extra = {
        "data": {"data_dir": str(Path(datamodule.data_dir).resolve()), "src_lang": datamodule.src_lang,
                 "tgt_lang": datamodule.tgt_lang},
        "decoding": OmegaConf.to_container(cfg.decoding, resolve=True),
        "trained": {"epochs": trainer.current_epoch, "steps": trainer.global_step, "val_bleu": chosen},
    }
    return save_bundle(run_dir / "model", system.model, "seq2seq", datamodule.tokenizer_files(), extra)


def evaluate_test(model_dir: Path, datamodule, cfg: DictConfig, run_dir: Path) -> None:
    files = datamodule.test_files
    if files is None:
        return
    src_lines, ref_lines = read_parallel(*files)
    translator = Translator.load(model_dir, device="cpu" if cfg.trainer.get("accelerator") == "cpu" else None)
    d = cfg.decoding
    hyps = translator.translate(src_lines, beam=d.beam, length_penalty=d.length_penalty,
                                max_len_ratio=d.max_len_ratio, max_len_offset=d.max_len_offset,
                                batch_tokens=d.batch_tokens)
    scores = score_corpus(hyps, ref_lines)
    (run_dir / f"test.hyp.{datamodule.tgt_lang}").write_text("\n".join(hyps) + "\n", encoding="utf-8")
    (run_dir / "test_scores.json").write_text(json.dumps(
        {name: s.as_dict() for name, s in scores.items()} | {"beam": d.beam, "src": str(files[0])}, indent=2) + "\n")
    print(f"\nTest set {files[0].name} -> {files[1].name}, beam {d.beam}:")
    print(format_scores(scores))
    print("\nSample translations:")
    for i in range(min(3, len(src_lines))):
        print(f"  src: {src_lines[i]}\n  ref: {ref_lines[i]}\n  hyp: {hyps[i]}")


@user_errors_to_exit
def train(cfg: DictConfig) -> Path:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    L.seed_everything(cfg.seed, workers=True)
    torch.set_float32_matmul_precision("high")

    datamodule = instantiate(cfg.data, tokenizer=OmegaConf.to_container(cfg.tokenizer, resolve=True),
                             run_dir=str(run_dir), _convert_="all")
    model = instantiate(cfg.model)
    system = TranslationSystem(model, **OmegaConf.to_container(cfg.optim, resolve=True),
                               **OmegaConf.to_container(cfg.validation, resolve=True))
    log.info("model: %s parameters", f"{sum(p.numel() for p in model.parameters()):,}")
    last_validation = LastValidationStep()
    loggers = build_loggers(cfg)
    callbacks = [c for c in build_callbacks(cfg)
                 if loggers or not isinstance(c, L.pytorch.callbacks.LearningRateMonitor)]
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks + [last_validation],
                                     logger=loggers or False)
    resume = cfg.get("resume")
    if resume and not Path(resume).is_file():
        raise UserError(f"resume={resume}: checkpoint not found")
    trainer.fit(system, datamodule=datamodule, ckpt_path=resume)
    if trainer.interrupted:
        log.warning("training was interrupted; exporting what was validated so far")
    model_dir = export_model(trainer, system, datamodule, run_dir, cfg, last_validation)
    print(f"model written to {model_dir}")
    if cfg.get("evaluate_test", True) and trainer.is_global_zero:
        evaluate_test(model_dir, datamodule, cfg, run_dir)
    return model_dir


@hydra.main(config_path=CONF_DIR, config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    train(cfg)


if __name__ == "__main__":
    main()
