"""Training and decoding throughput of the translator against this machine's matrix-product rate.

    python benchmarks/throughput.py --model benchmarks/results/runs/full/model   # what `make bench` runs
    python benchmarks/throughput.py --quick                                       # seconds; for the tests

In one process:
1. the fp32 (and bf16) rate of a large square matrix product: medians of several before and
   after every training measurement, and one product timed after every timed training step;
2. optimizer steps of the Multi30k recipe's model (also with `trainer.precision=auto`, as shipped,
   against the faster of the two forced precisions), of the same model with input feeding (the
   issue's OpenNMT-py comparison model) and of a larger variant (2-layer 512-wide encoder and
   decoder) through the real Lightning loop, fp32 and bf16-mixed, timed after a warm-up: target
   and source+target tokens/s, the model's analytic FLOPs per target token (forward + backward =
   3x forward, counted from the config: LSTM gates, attention, output layer, output projection;
   on real tokens only, padding is overhead), the achieved FLOP/s and its ratio to the matmul
   rate, the padding ratio of the batches, and peak RSS. This machine's speed drifts by 10-20%
   within seconds, so every timed step is compared with the matmul rate read right after it
   (the ratio is the median over steps), and the measurements run in interleaved rounds (fp32
   and bf16 of a model back to back) whose tokens/s and bf16 speedups are medians over rounds;
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

from seq2seq.batching import TokenBatchSampler, padding_ratio
from seq2seq.config import CONF_DIR
from seq2seq.metrics import score_corpus
from seq2seq.precision import cpu_runs_bf16_lstm, resolve_training_precision
from seq2seq.runtime import reuse_freed_memory
from seq2seq.tasks.translation.api import Translator
from seq2seq.tasks.translation.system import TranslationSystem
from seq2seq.text import read_lines
from seq2seq.training import Optimization

# Model variants beside the recipe's: the larger one of the issue (2 layers of 512 on both
# sides) and the recipe's with input feeding, like the OpenNMT-py reference model.
LARGE = {"embed_dim": 512, "encoder_hidden_size": 512, "encoder_layers": 2, "decoder_hidden_size": 512,
         "decoder_layers": 2}
VARIANTS = {"train": {}, "train_input_feeding": {"input_feeding": True}, "train_large": LARGE}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def matmul_flops_per_s(dtype: torch.dtype, device: str, size: int, repeats: int = 7) -> float:
    """Median rate of `repeats` (size x size) products after a warm-up one."""
    rate = matmul_timer(dtype, device, size)
    return statistics.median(rate() for _ in range(repeats))


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
    """Wall time and tokens of each optimizer step, after `warmup` steps.

    With a `reference` (a function timing one large matrix product), each timed step is followed,
    outside its timing, by a reading of the matmul rate: the step's achieved rate is compared
    with the machine's speed of that moment, which drifts by 10-20% within seconds here.
    """

    def __init__(self, warmup: int, reference=None) -> None:
        self.warmup, self.reference = warmup, reference
        self.seconds: list[float] = []
        self.steps: list[tuple[int, int, int]] = []  # (source, target, attended) tokens per timed step
        self.reference_rates: list[float] = []
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
        self.steps.append((int(batch.src_lengths.sum()), int(tgt_lengths.sum()),
                           int((batch.src_lengths * tgt_lengths.to(batch.src_lengths.device)).sum())))
        if self.reference is not None:
            self.reference_rates.append(self.reference())

    @property
    def src_tokens(self) -> int:
        return sum(step[0] for step in self.steps)

    @property
    def tgt_tokens(self) -> int:
        return sum(step[1] for step in self.steps)

    @property
    def attended(self) -> int:
        return sum(step[2] for step in self.steps)


def matmul_timer(dtype: torch.dtype, device: str, size: int):
    """A function returning the FLOP/s of one (size x size) product, operands made once."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    torch.mm(a, b)

    def rate() -> float:
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        torch.mm(a, b)
        if device == "cuda":
            torch.cuda.synchronize()
        return 2 * size ** 3 / (time.perf_counter() - start)

    return rate


def compose_recipe(overrides: list[str]):
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def measure_training(datamodule, model_overrides: dict, base: list[str], precision: str, steps: int, warmup: int,
                     accelerator: str, reference=None) -> dict:
    cfg = compose_recipe(base)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=False) | model_overrides
    model_cfg["src_vocab_size"] = datamodule.src_tokenizer.vocab_size
    model_cfg["tgt_vocab_size"] = datamodule.tgt_tokenizer.vocab_size
    torch.manual_seed(0)
    model = instantiate(model_cfg)
    system = TranslationSystem(model, Optimization(**OmegaConf.to_container(cfg.optim, resolve=True)),
                               **{k: v for k, v in OmegaConf.to_container(cfg.task, resolve=True).items()
                                  if k != "name"})
    timer = StepTimer(warmup, reference)
    trainer = L.Trainer(accelerator=accelerator, devices=1, precision=precision, max_steps=warmup + steps,
                        limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, gradient_clip_val=cfg.trainer.gradient_clip_val,
                        use_distributed_sampler=False, callbacks=[timer])
    trainer.fit(system, datamodule=datamodule)
    seconds = sum(timer.seconds)
    config = model.config
    flops = 3 * forward_flops(config, timer.src_tokens / timer.tgt_tokens, timer.attended / timer.tgt_tokens)
    # Each step's achieved rate (its own token mix) over the matmul rate read right after it.
    step_ratios = [3 * forward_flops(config, src / tgt, attended / tgt) * tgt / step_seconds / rate
                   for (src, tgt, attended), step_seconds, rate
                   in zip(timer.steps, timer.seconds, timer.reference_rates)]
    return {"tgt_tokens_per_s": timer.tgt_tokens / seconds, "step_ratios": step_ratios,
            "src_tgt_tokens_per_s": (timer.src_tokens + timer.tgt_tokens) / seconds,
            "flops_per_tgt_token": flops, "flops_per_s": flops * timer.tgt_tokens / seconds,
            "median_step_seconds": statistics.median(timer.seconds),
            "parameters": sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())}


def measure_training_rounds(datamodule, variants: dict, base: list[str], args, accelerator: str,
                            matmul_size: int) -> dict:
    """fp32 and bf16-mixed training of every variant in `args.rounds` interleaved rounds; medians."""
    rounds: dict[str, list[dict]] = {name: [] for name in variants}
    bf16_runs, bf16_why = bf16_lstm_runs(args.device)
    # Without a bf16 LSTM nothing trains in bf16, and a bf16 product there (AVX2) is slow to time.
    readings: dict[torch.dtype, list[float]] = {torch.float32: [], **({torch.bfloat16: []} if bf16_runs else {})}

    def read_matmul_rates() -> dict[torch.dtype, float]:
        now = {dtype: matmul_flops_per_s(dtype, args.device, matmul_size) for dtype in readings}
        for dtype, rate in now.items():
            readings[dtype].append(rate)
        return now

    references = {dtype: matmul_timer(dtype, args.device, matmul_size) for dtype in readings}
    auto_precision, why = resolve_training_precision("auto", accelerator)
    auto_rounds: list[dict] = []
    result = {"train_auto_precision": auto_precision, "train_auto_reason": why}
    if not bf16_runs:  # e.g. AVX2-only CPUs: oneDNN has no bf16 LSTM, bf16-mixed cannot train at all
        result["train_bf16_unavailable"] = bf16_why
    before = read_matmul_rates()
    for round_index in range(args.rounds):
        for name, overrides in variants.items():
            fp32 = measure_training(datamodule, overrides, base, "32-true", args.steps, args.warmup, accelerator,
                                    references[torch.float32])
            low = measure_training(datamodule, overrides, base, "bf16-mixed", args.steps, args.warmup, accelerator,
                                   references[torch.bfloat16]) if bf16_runs else None
            if name == "train":
                # As shipped: what trainer.precision=auto chooses here, timed beside both forced ones.
                auto_reference = references[torch.bfloat16 if "bf16" in auto_precision else torch.float32]
                auto = measure_training(datamodule, overrides, base, auto_precision, args.steps, args.warmup,
                                        accelerator, auto_reference)
                auto_rounds.append({"auto": auto["tgt_tokens_per_s"], "best": max(
                    fp32["tgt_tokens_per_s"], low["tgt_tokens_per_s"] if low else 0.0)})
            after = read_matmul_rates()
            if round_index == 0 and name == "train":
                result["train_peak_rss_mb"] = peak_rss_mb()  # nothing bigger has run yet in this process
            fp32_rate = max(before[torch.float32], after[torch.float32])
            rounds[name].append({"fp32": fp32, "low": low, "ratio": fp32["flops_per_s"] / fp32_rate,
                                 "speedup": low["tgt_tokens_per_s"] / fp32["tgt_tokens_per_s"] if low else None})
            before = after
    result["matmul_flops_per_s"] = statistics.median(readings[torch.float32])
    result["matmul_bf16_flops_per_s"] = statistics.median(readings[torch.bfloat16]) if bf16_runs else None
    result["matmul_flops_per_s_readings"] = [round(r / 1e9, 1) for r in readings[torch.float32]]
    result["training_rounds"] = args.rounds
    if auto_rounds:
        result["train_auto_tgt_tokens_per_s"] = statistics.median(r["auto"] for r in auto_rounds)
        # Within 5% of the faster forced precision is the target (issue 15): per round, auto over
        # the better of 32-true and bf16-mixed measured in that round; the median of the rounds.
        result["train_auto_vs_faster_forced"] = statistics.median(r["auto"] / r["best"] for r in auto_rounds)
        result["train_auto_vs_faster_forced_rounds"] = [round(r["auto"] / r["best"], 3) for r in auto_rounds]
    for name, measured in rounds.items():
        def median(pick, measured=measured) -> float:
            return statistics.median(pick(m) for m in measured)

        result[f"{name}_parameters"] = measured[0]["fp32"]["parameters"]
        result[f"{name}_tgt_tokens_per_s"] = median(lambda m: m["fp32"]["tgt_tokens_per_s"])
        result[f"{name}_src_tgt_tokens_per_s"] = median(lambda m: m["fp32"]["src_tgt_tokens_per_s"])
        result[f"{name}_flops_per_tgt_token"] = measured[0]["fp32"]["flops_per_tgt_token"]
        result[f"{name}_flops_per_s"] = median(lambda m: m["fp32"]["flops_per_s"])
        # Headline: median over every timed step of every round of (the step's achieved FLOP/s /
        # the matmul rate read right after it). Beside it, per round: the round's average rate
        # over the higher of the two matmul readings around the round.
        result[f"{name}_flops_ratio"] = statistics.median(r for m in measured for r in m["fp32"]["step_ratios"])
        result[f"{name}_flops_ratio_rounds"] = [round(m["ratio"], 3) for m in measured]
        # The same achieved rate against the best matmul reading of the whole run: the strictest view.
        result[f"{name}_flops_ratio_to_best_matmul"] = result[f"{name}_flops_per_s"] / max(readings[torch.float32])
        if not bf16_runs:
            result[f"{name}_bf16_tgt_tokens_per_s"] = None
            continue
        result[f"{name}_bf16_tgt_tokens_per_s"] = median(lambda m: m["low"]["tgt_tokens_per_s"])
        result[f"{name}_bf16_speedup"] = median(lambda m: m["speedup"])
        result[f"{name}_bf16_speedup_rounds"] = [round(m["speedup"], 3) for m in measured]
        result[f"{name}_bf16_flops_ratio_to_bf16_matmul"] = statistics.median(
            r for m in measured for r in m["low"]["step_ratios"])
    return result


def batch_padding(datamodule) -> dict:
    data = datamodule.train_set
    batches = list(TokenBatchSampler(data.src_lengths, data.tgt_lengths, datamodule.max_tokens, shuffle=True,
                                     seed=0))
    return {"src": padding_ratio(batches, data.src_lengths), "tgt": padding_ratio(batches, data.tgt_lengths)}


def bf16_lstm_runs(device: str) -> tuple[bool, str]:
    """Whether bf16 autocast can run the LSTMs on `device` (always on GPUs; probed on CPUs)."""
    return cpu_runs_bf16_lstm() if torch.device(device).type == "cpu" else (True, "")


# --------------------------------------------------------------------- decoding
def measure_decoding(model_dir: Path, src: list[str], refs: list[str], device: str, repeats: int) -> dict:
    result = {}
    for precision in ("fp32", "bf16") if bf16_lstm_runs(device)[0] else ("fp32",):
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


def quick_corpus(directory: Path, pairs: int, vocabulary: int = 60) -> None:
    """A generated parallel corpus (word reversal) laid out like Multi30k."""
    rng = random.Random(0)
    words = [f"w{i}" for i in range(vocabulary)]
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
    parser.add_argument("--rounds", type=int, default=3, help="interleaved training rounds (medians)")
    parser.add_argument("--repeats", type=int, default=3, help="decoding runs (median)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=sorted(VARIANTS),
                        help="model variants to train (default: all three)")
    parser.add_argument("--quick", action="store_true", help="tiny model, generated corpus, a few steps")
    parser.add_argument("--synthetic", action="store_true",
                        help="the recipe's model on a generated corpus (no Multi30k here, e.g. `make gpu-check`)")
    parser.add_argument("--out", default=str(RESULTS / "latest.json"))
    args = parser.parse_args()
    reuse_freed_memory()  # as every seq2seq command does
    accelerator = "gpu" if args.device == "cuda" else "cpu"

    with tempfile.TemporaryDirectory() as tmp:
        base = ["experiment=multi30k_de_en", f"hydra.run.dir={tmp}", f"paths.cache_dir={tmp}/cache"
                if args.quick else "paths.cache_dir=.cache/seq2seq"]
        if args.quick or args.synthetic:
            corpus = Path(tmp) / "multi30k"
            corpus.mkdir()
            # --synthetic: as many source and target words as the recipe's 8k joint vocabulary has pieces,
            # so that the output layer costs what it costs on Multi30k.
            pairs, words, vocab_size = (400, 60, 100) if args.quick else (20_000, 4_100, 8000)
            quick_corpus(corpus, pairs, words)
            base += [f"paths.data_root={tmp}", "data.download=null", "tokenizer.model_type=word",
                     f"tokenizer.vocab_size={vocab_size}"]
        if args.quick:
            base += ["model.embed_dim=32", "model.encoder_hidden_size=32", "model.decoder_hidden_size=64",
                     "model.encoder_layers=1"]
            args.steps, args.warmup, args.rounds = min(args.steps, 3), min(args.warmup, 1), 1
        cfg = compose_recipe(base)
        matmul_size = 512 if args.quick else (8192 if args.device == "cuda" else 2048)
        result: dict = {"device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu"}
        datamodule = instantiate(cfg.data, tokenizer=OmegaConf.to_container(cfg.tokenizer, resolve=True),
                                 _convert_="all")
        datamodule.prepare_data()
        datamodule.setup("fit")
        padding = batch_padding(datamodule)
        result["batch_max_tokens"] = datamodule.max_tokens
        result["padding_ratio_src"], result["padding_ratio_tgt"] = padding["src"], padding["tgt"]
        variants = {"train": {}} if args.quick else {name: VARIANTS[name] for name in args.variants}
        result |= measure_training_rounds(datamodule, variants, base, args, accelerator, matmul_size)
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
            if args.quick or args.synthetic:
                data_dir = datamodule.data_dir
            src = read_lines(data_dir / "test_2016_flickr.de")
            refs = read_lines(data_dir / "test_2016_flickr.en")
            decoding = measure_decoding(model_dir, src, refs, args.device, 1 if args.quick else args.repeats)
            result["decode_model"] = str(model_dir)
            result["decode_sentences"] = len(src)
            # The headline figures use bf16 matrix products where the CPU can run them; fp32 beside them.
            headline = "bf16" if "beam5_bf16_seconds" in decoding else "fp32"
            result["decode_headline_precision"] = headline
            result["greedy_seconds"] = decoding[f"greedy_{headline}_seconds"]
            result["beam5_seconds"] = decoding[f"beam5_{headline}_seconds"]
            result["beam5_bleu"] = decoding[f"beam5_{headline}_bleu"]
            result |= decoding
    result = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in result.items()}
    report(result, Path(args.out))


if __name__ == "__main__":
    main()
