"""What `model.cell=explicit` costs: training-step time of the gate-by-gate LSTM vs nn.LSTM.

    python benchmarks/lstm_cell_speed.py              # the Multi30k recipe's shapes, 48 x 25 batch
    python benchmarks/lstm_cell_speed.py --repeats 20 --threads 1   # steadier on a busy machine

The Multi30k recipe model (bi-LSTM encoder 2x256, LSTM-512 decoder, Luong general attention,
8k joint vocabulary) with the same weights in both cells, on 48 source sentences of 15-25 tokens
(packed, as in training) and 48 targets of 25 tokens. Timed: forward + cross-entropy + backward
of the whole model, and of the encoder and decoder LSTM layers alone, in fp32 and under bf16
autocast (the recipe's precision). The two cells alternate, so drift of a shared machine hits
both alike; each figure is the median of --repeats runs after warm-up. Prints a table and writes
benchmarks/results/lstm_cell_speed.json.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from reporting import RESULTS, report
from torch.nn.utils.rnn import pack_padded_sequence

from seq2seq.tasks.translation.model import Seq2Seq
from seq2seq.tokenizer import PAD_ID

RECIPE = dict(src_vocab_size=8000, tgt_vocab_size=8000, embed_dim=256, encoder_hidden_size=256,
              encoder_layers=2, bidirectional=True, decoder_hidden_size=512, decoder_layers=1,
              attention="luong_general", dropout=0.25)
BATCH, STEPS = 48, 25


def batch(generator: torch.Generator) -> dict[str, torch.Tensor]:
    lengths = torch.randint(15, STEPS + 1, (BATCH,), generator=generator)
    src = torch.randint(4, 8000, (BATCH, STEPS), generator=generator)
    src[torch.arange(STEPS).unsqueeze(0) >= lengths.unsqueeze(1)] = PAD_ID
    tgt = torch.randint(4, 8000, (BATCH, STEPS + 1), generator=generator)
    return dict(src=src, lengths=lengths, tgt=tgt)


def model_step(model: Seq2Seq, data: dict[str, torch.Tensor]) -> None:
    logits = model.project(model(data["src"], data["lengths"], data["tgt"][:, :-1]))
    F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), data["tgt"][:, 1:].reshape(-1)).backward()


def encoder_lstm_step(model: Seq2Seq, data: dict[str, torch.Tensor]) -> None:
    embedded = torch.randn(BATCH, STEPS, RECIPE["embed_dim"], requires_grad=True)
    packed = pack_padded_sequence(embedded, data["lengths"], batch_first=True, enforce_sorted=False)
    output, (h, c) = model.encoder.rnn(packed)
    (output.data.float().sum() + h.float().sum() + c.float().sum()).backward()


def decoder_lstm_step(model: Seq2Seq, data: dict[str, torch.Tensor]) -> None:
    embedded = torch.randn(BATCH, STEPS, RECIPE["embed_dim"], requires_grad=True)
    state = tuple(torch.randn(1, BATCH, RECIPE["decoder_hidden_size"]) for _ in range(2))
    output, _ = model.decoder.rnn(embedded, state)
    output.float().sum().backward()


def median_ms(models: dict[str, Seq2Seq], step: Callable, data, bf16: bool, repeats: int) -> dict[str, float]:
    times: dict[str, list[float]] = {cell: [] for cell in models}
    for run in range(repeats + 2):  # two warm-up rounds
        for cell, model in models.items():
            model.zero_grad(set_to_none=True)
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                step(model, data)
            if run >= 2:
                times[cell].append((time.perf_counter() - start) * 1000)
    return {cell: statistics.median(values) for cell, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    fused = Seq2Seq(**RECIPE).train()
    explicit = Seq2Seq(**RECIPE, cell="explicit").train()
    explicit.load_state_dict(fused.state_dict())
    models = {"fused": fused, "explicit": explicit}
    data = batch(torch.Generator().manual_seed(0))
    result: dict = {"batch": f"{BATCH} sentences x {STEPS} tokens", "repeats": args.repeats}
    for name, step in [("model", model_step), ("encoder_lstm", encoder_lstm_step),
                       ("decoder_lstm", decoder_lstm_step)]:
        for precision, bf16 in [("fp32", False), ("bf16", True)]:
            ms = median_ms(models, step, data, bf16, args.repeats)
            key = f"{name}_{precision}"
            result[f"{key}_fused_ms"] = round(ms["fused"], 1)
            result[f"{key}_explicit_ms"] = round(ms["explicit"], 1)
            result[f"{key}_explicit_over_fused"] = round(ms["explicit"] / ms["fused"], 2)
    report(result, RESULTS / "lstm_cell_speed.json")


if __name__ == "__main__":
    main()
