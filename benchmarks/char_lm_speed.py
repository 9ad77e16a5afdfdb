"""Speed of the character LM: training characters/s, and generation characters/s at batch 1 and 32.

    python benchmarks/char_lm_speed.py                                 # the recipe's model, fresh weights
    python benchmarks/char_lm_speed.py --model outputs/.../model       # a trained model directory

Training: optimizer steps of the recipe's shape (32 streams x 128 characters, Adam, gradient
clipping) in fp32 and under bf16 autocast, timed after a warm-up; the median step gives
characters/s. Generation: `Generator.generate` (the path behind seq2seq-generate) writing 500
characters after a prompt, for 1 and 32 samples at once. Prints a table and writes
benchmarks/results/char_lm_speed.json.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from reporting import RESULTS, report

from seq2seq.bundle import save_bundle
from seq2seq.precision import cpu_runs_bf16_lstm
from seq2seq.tasks.language_model.api import Generator
from seq2seq.tasks.language_model.model import LanguageModel
from seq2seq.tokenizer import SentencePieceSettings, train_or_load

RECIPE = dict(embed_dim=128, hidden_size=512, num_layers=2, dropout=0.25)


def train_chars_per_s(model: LanguageModel, streams: int, bptt: int, bf16: bool, steps: int) -> float:
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    data = torch.randint(4, model.vocab_size, (streams, bptt * (steps + 3) + 1), generator=generator)
    state, times = None, []
    for step in range(steps + 3):
        inputs = data[:, step * bptt:(step + 1) * bptt]
        targets = data[:, step * bptt + 1:(step + 1) * bptt + 1]
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits, state = model(inputs, state)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        state = (state[0].detach(), state[1].detach())
        times.append(time.perf_counter() - start)
    return streams * bptt / statistics.median(times[3:])  # the first steps warm up allocators and kernels


def generation_chars_per_s(generator: Generator, samples: int, chars: int, repeats: int) -> float:
    generator.generate("ROMEO:", max_chars=8, num_samples=samples, seed=0)  # warm-up
    times = []
    for seed in range(repeats):
        start = time.perf_counter()
        texts = generator.generate("ROMEO:", max_chars=chars, num_samples=samples, seed=seed)
        times.append(time.perf_counter() - start)
        assert sum(len(t) for t in texts) == samples * chars
    return samples * chars / statistics.median(times)


def fresh_model_dir(work: Path) -> Path:
    """The recipe's model with random weights and a character vocabulary like Tiny Shakespeare's."""
    text = work / "text.txt"
    text.write_text("".join(chr(c) for c in range(32, 97)) + "\n", encoding="utf-8")
    tokenizer = train_or_load([text], work, SentencePieceSettings(vocab_size=1000, model_type="char",
                                                                  preserve_text=True))
    torch.manual_seed(0)
    model = LanguageModel(tokenizer.vocab_size, **RECIPE)
    return save_bundle(work / "model", model, "lstm_lm", {"text": tokenizer.model_file})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a trained model directory (default: the recipe's model, fresh)")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per precision")
    parser.add_argument("--chars", type=int, default=500, help="characters generated per sample")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS / "char_lm_speed.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(args.model) if args.model else fresh_model_dir(Path(tmp))
        result: dict = {"model": str(args.model or "recipe model, fresh weights")}
        bf16_runs, why = cpu_runs_bf16_lstm()
        if not bf16_runs:  # AVX2-only CPUs: no bf16 LSTM in oneDNN
            result["bf16_unavailable"] = why
        for precision in ("fp32", "bf16") if bf16_runs else ("fp32",):
            generator = Generator.load(model_dir, device="cpu", precision=precision)
            model = generator.model
            result["parameters"] = sum(p.numel() for p in model.parameters())
            for samples in (1, 32):
                result[f"generate_{precision}_batch{samples}_chars_per_s"] = round(
                    generation_chars_per_s(generator, samples, args.chars, args.repeats), 1)
            trainable = LanguageModel(**model.config)
            trainable.load_state_dict(model.state_dict())
            result[f"train_{precision}_chars_per_s"] = round(
                train_chars_per_s(trainable, 32, 128, precision == "bf16", args.steps), 1)
    report(result, Path(args.out))


if __name__ == "__main__":
    main()
