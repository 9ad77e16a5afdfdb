"""Training and decoding throughput of the translator against this machine's matrix-product rate.

    python benchmarks/throughput.py --model benchmarks/results/runs/full/model   # what `make bench` runs
    python benchmarks/throughput.py --quick                                       # seconds; for the tests

In one process:
1. the fp32 (and bf16) rate of a large square matrix product, median of several, read before
   each training measurement and at the end (the highest reading is the reference);
2. optimizer steps of the Multi30k recipe's model and of a larger variant (2-layer 512-wide
   encoder and decoder) through the real Lightning loop, fp32 and bf16-mixed, timed after a
   warm-up: target and source+target tokens/s, the model's analytic FLOPs per target token
   (forward + backward = 3x forward, counted from the config: LSTM gates, attention, output
   layer, output projection; on real tokens only, padding is overhead), the achieved FLOP/s and
   its ratio to the measured matmul rate, the padding ratio of the batches, and peak RSS;
3. greedy and beam-5 decoding of test_2016_flickr with a trained model directory, with the BLEU
   of those outputs, in fp32 and with bf16 matrix products.
Prints a table and writes JSON (benchmarks/results/latest.json by default).
"""

from __future__ import annotations

import argparse
import random
import resource
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from reporting import RESULTS, report
from seq2seq.cli.common import CONF_DIR
from seq2seq.data import TokenBatchSampler, padding_ratio, read_lines
from seq2seq.metrics import score_corpus
from seq2seq.runtime import reuse_freed_memory
from seq2seq.systems import TranslationSystem
from seq2seq.translator import Translator

# The larger variant of the issue: 2 layers of 512 on both sides.
LARGE = {"embed_dim": 512, "encoder_hidden_size": 512, "encoder_layers": 2, "decoder_hidden_size": 512,
         "decoder_layers": 2}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def matmul_flops_per_s(dtype: torch.dtype, device: str, size: int, repeats: int = 7) -> float:
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    times = []
    for _ in range(repeats + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        torch.mm(a, b)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return 2 * size ** 3 / statistics.median(times[1:])


# ------------------------------------------------------------------- FLOP count
def lstm_flops(input_size: int, hidden: int) -> int:
    """Forward multiply-adds x2 of one LSTM step: the four gates' input and recurrent products."""
    return 2 * 4 * hidden * (input_size + hidden)


def forward_flops(config: dict, src_per_tgt: float, attended_per_tgt: float) -> float:
    """Forward FLOPs per target token of a Seq2Seq config.

    src_per_tgt: source tokens per target token; attended_per_tgt: source positions each target
    token attends over (the mean source length, weighted by target length).
    """
    e, he, hd = config["embed_dim"], config["encoder_hidden_size"], config["decoder_hidden_size"]
    dirs = 2 if config["bidirectional"] else 1
    enc_out = he * dirs
    per_src = 0.0
    for layer in range(config["encoder_layers"]):
        per_src += dirs * lstm_flops(e if layer == 0 else enc_out, he)
    out_size = e if config["tie_output_embeddings"] else hd
    attention = config["attention"]
    per_tgt = 0.0
    for layer in range(config["decoder_layers"]):
        rnn_in = e
        if layer == 0 and config["input_feeding"]:
            rnn_in += out_size
        if layer == 0 and attention == "bahdanau":
            rnn_in += enc_out
        per_tgt += lstm_flops(rnn_in if layer == 0 else hd, hd)
    if attention != "none":
        if attention in ("luong_general",):
            per_src += 2 * enc_out * hd  # keys projected once per source position
        if attention in ("bahdanau", "luong_concat"):
            per_src += 2 * enc_out * hd
            per_tgt += 2 * hd * hd + attended_per_tgt * 3 * hd  # query projection, tanh energy
        per_tgt += attended_per_tgt * 2 * (hd + enc_out)  # scores and weighted sum
        per_tgt += 2 * (hd + enc_out) * out_size  # attentional output layer
    else:
        per_tgt += 2 * hd * out_size
    per_tgt += 2 * out_size * config["tgt_vocab_size"]  # output projection
    return per_tgt + src_per_tgt * per_src


# --------------------------------------------------------------------- training
class StepTimer(L.Callback):
    """Wall time and tokens of each optimizer step, after `warmup` steps."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.seconds, self.src_tokens, self.tgt_tokens = [], 0, 0
        self.attended = 0
        self._start = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()
        if batch_idx < self.warmup:
            return
        self.seconds.append(time.perf_counter() - self._start)
        tgt_lengths = (batch.tgt_out != 0).sum(1)
        self.src_tokens += int(batch.src_lengths.sum())
        self.tgt_tokens += int(tgt_lengths.sum())
        self.attended += int((batch.src_lengths * tgt_lengths.to(batch.src_lengths.device)).sum())


def compose_recipe(overrides: list[str]):
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def measure_training(datamodule, model_overrides: dict, base: list[str], precision: str, steps: int, warmup: int,
                     accelerator: str) -> dict:
    cfg = compose_recipe(base)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=False) | model_overrides
    model_cfg["src_vocab_size"] = datamodule.src_tokenizer.vocab_size
    model_cfg["tgt_vocab_size"] = datamodule.tgt_tokenizer.vocab_size
    torch.manual_seed(0)
    model = instantiate(model_cfg)
    system = TranslationSystem(model, **OmegaConf.to_container(cfg.optim, resolve=True),
                               **{k: v for k, v in OmegaConf.to_container(cfg.task, resolve=True).items()
                                  if k != "name"})
    timer = StepTimer(warmup)
    trainer = L.Trainer(accelerator=accelerator, devices=1, precision=precision, max_steps=warmup + steps,
                        limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, gradient_clip_val=cfg.trainer.gradient_clip_val,
                        use_distributed_sampler=False, callbacks=[timer])
    trainer.fit(system, datamodule=datamodule)
    seconds = sum(timer.seconds)
    config = model.config
    flops = 3 * forward_flops(config, timer.src_tokens / timer.tgt_tokens, timer.attended / timer.tgt_tokens)
    return {"tgt_tokens_per_s": timer.tgt_tokens / seconds,
            "src_tgt_tokens_per_s": (timer.src_tokens + timer.tgt_tokens) / seconds,
            "flops_per_tgt_token": flops, "flops_per_s": flops * timer.tgt_tokens / seconds,
            "median_step_seconds": statistics.median(timer.seconds),
            "parameters": sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())}


def batch_padding(datamodule) -> dict:
    data = datamodule.train_set
    batches = list(TokenBatchSampler(data.src_lengths, data.tgt_lengths, datamodule.max_tokens, shuffle=True,
                                     seed=0))
    return {"src": padding_ratio(batches, data.src_lengths), "tgt": padding_ratio(batches, data.tgt_lengths)}


# --------------------------------------------------------------------- decoding
def measure_decoding(model_dir: Path, src: list[str], refs: list[str], device: str, repeats: int) -> dict:
    result = {}
    for precision in ("fp32", "bf16"):
        translator = Translator.load(model_dir, device=device, precision=precision)
        for name, beam in (("greedy", 1), ("beam5", 5)):
            translator.translate(src[:50], beam=beam)  # warm-up
            times, outputs = [], []
            for _ in range(repeats):
                start = time.perf_counter()
                outputs = translator.translate(src, beam=beam)
                times.append(time.perf_counter() - start)
            seconds = statistics.median(times)
            tokens = sum(len(ids) + 1 for ids in translator.tgt_tokenizer.encode(outputs))
            key = f"{name}_{precision}"
            result[f"{key}_seconds"] = seconds
            result[f"{key}_sentences_per_s"] = len(src) / seconds
            result[f"{key}_tokens_per_s"] = tokens / seconds
            result[f"{key}_bleu"] = score_corpus(outputs, refs, ("bleu",))["bleu"].score
    return result


def quick_corpus(directory: Path, pairs: int) -> None:
    """A small generated parallel corpus (word reversal) laid out like Multi30k."""
    rng = random.Random(0)
    words = [f"w{i}" for i in range(60)]
    for split, n in (("train", pairs), ("val", 40), ("test_2016_flickr", 40)):
        src, tgt = [], []
        for _ in range(n):
            sentence = [rng.choice(words) for _ in range(rng.randint(3, 12))]
            src.append(" ".join(sentence))
            tgt.append(" ".join(reversed(sentence)).upper())
        (directory / f"{split}.de").write_text("\n".join(src) + "\n", encoding="utf-8")
        (directory / f"{split}.en").write_text("\n".join(tgt) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="trained model directory to decode with (default: train a quick one "
                                        "in --quick mode, otherwise skip decoding)")
    parser.add_argument("--steps", type=int, default=40, help="timed optimizer steps per measurement")
    parser.add_argument("--warmup", type=int, default=8, help="untimed optimizer steps before them")
    parser.add_argument("--repeats", type=int, default=3, help="decoding runs (median)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny model, generated corpus, a few steps")
    parser.add_argument("--out", default=str(RESULTS / "latest.json"))
    args = parser.parse_args()
    reuse_freed_memory()  # as every seq2seq command does
    accelerator = "gpu" if args.device == "cuda" else "cpu"
    low_precision = "bf16-mixed"

    with tempfile.TemporaryDirectory() as tmp:
        base = ["experiment=multi30k_de_en", f"hydra.run.dir={tmp}", f"paths.cache_dir={tmp}/cache"
                if args.quick else "paths.cache_dir=.cache/seq2seq"]
        if args.quick:
            corpus = Path(tmp) / "multi30k"
            corpus.mkdir()
            quick_corpus(corpus, 400)
            base += [f"paths.data_root={tmp}", "data.download=null", "tokenizer.vocab_size=100",
                     "tokenizer.model_type=word", "model.embed_dim=32", "model.encoder_hidden_size=32",
                     "model.decoder_hidden_size=64", "model.encoder_layers=1"]
            args.steps, args.warmup = min(args.steps, 3), min(args.warmup, 1)
        cfg = compose_recipe(base)
        matmul_size = 512 if args.quick else (8192 if args.device == "cuda" else 2048)
        # The matmul rate drifts during a run on a shared machine: it is measured before each
        # training measurement and the highest reading is the reference, so a slow reading can
        # never inflate the achieved fraction.
        matmul_readings = {torch.float32: [], torch.bfloat16: []}

        def read_matmul_rates() -> None:
            for dtype, readings in matmul_readings.items():
                readings.append(matmul_flops_per_s(dtype, args.device, matmul_size))

        read_matmul_rates()
        result: dict = {"device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu"}
        datamodule = instantiate(cfg.data, tokenizer=OmegaConf.to_container(cfg.tokenizer, resolve=True),
                                 _convert_="all")
        datamodule.prepare_data()
        datamodule.setup("fit")
        padding = batch_padding(datamodule)
        result["batch_max_tokens"] = datamodule.max_tokens
        result["padding_ratio_src"], result["padding_ratio_tgt"] = padding["src"], padding["tgt"]

        variants = {"train": {}} if args.quick else {"train": {}, "train_large": LARGE}
        measured = {}
        for name, overrides in variants.items():
            read_matmul_rates()
            fp32 = measure_training(datamodule, overrides, base, "32-true", args.steps, args.warmup, accelerator)
            low = measure_training(datamodule, overrides, base, low_precision, args.steps, args.warmup, accelerator)
            measured[name] = (fp32, low)
            if name == "train":
                result["train_peak_rss_mb"] = peak_rss_mb()  # nothing bigger has run yet in this process
        read_matmul_rates()
        result["matmul_flops_per_s"] = max(matmul_readings[torch.float32])
        result["matmul_bf16_flops_per_s"] = max(matmul_readings[torch.bfloat16])
        result["matmul_flops_per_s_readings"] = [round(r / 1e9, 1) for r in matmul_readings[torch.float32]]
        for name, (fp32, low) in measured.items():
            result[f"{name}_parameters"] = fp32["parameters"]
            result[f"{name}_tgt_tokens_per_s"] = fp32["tgt_tokens_per_s"]
            result[f"{name}_src_tgt_tokens_per_s"] = fp32["src_tgt_tokens_per_s"]
            result[f"{name}_flops_per_tgt_token"] = fp32["flops_per_tgt_token"]
            result[f"{name}_flops_per_s"] = fp32["flops_per_s"]
            result[f"{name}_flops_ratio"] = fp32["flops_per_s"] / result["matmul_flops_per_s"]
            result[f"{name}_bf16_tgt_tokens_per_s"] = low["tgt_tokens_per_s"]
            result[f"{name}_bf16_speedup"] = low["tgt_tokens_per_s"] / fp32["tgt_tokens_per_s"]
            result[f"{name}_bf16_flops_ratio_to_bf16_matmul"] = low["flops_per_s"] / result["matmul_bf16_flops_per_s"]

        model_dir = Path(args.model) if args.model else None
        if model_dir is None and args.quick:
            from seq2seq.bundle import save_bundle

            torch.manual_seed(0)
            model = instantiate(cfg.model, src_vocab_size=datamodule.src_tokenizer.vocab_size,
                                tgt_vocab_size=datamodule.tgt_tokenizer.vocab_size)
            model_dir = save_bundle(Path(tmp) / "model", model, "seq2seq", datamodule.tokenizer_files(),
                                    {"data": {"data_dir": str(datamodule.data_dir)}})
        if model_dir is not None:
            translator = Translator.load(model_dir, device=args.device)
            data_dir = Path(translator.bundle.config["data"]["data_dir"])
            if args.quick:
                data_dir = datamodule.data_dir
            src = read_lines(data_dir / "test_2016_flickr.de")
            refs = read_lines(data_dir / "test_2016_flickr.en")
            decoding = measure_decoding(model_dir, src, refs, args.device, 1 if args.quick else args.repeats)
            result["decode_model"] = str(model_dir)
            result["decode_sentences"] = len(src)
            # The headline figures use bf16 matrix products; fp32 is reported beside them.
            result["greedy_seconds"] = decoding["greedy_bf16_seconds"]
            result["beam5_seconds"] = decoding["beam5_bf16_seconds"]
            result["beam5_bleu"] = decoding["beam5_bf16_bleu"]
            result |= decoding
    result = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in result.items()}
    report(result, Path(args.out))


if __name__ == "__main__":
    main()
