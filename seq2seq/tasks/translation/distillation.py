"""Sequence-level knowledge distillation (Kim & Rush 2016): a teacher (one model directory or an
ensemble) translates a training corpus's source side, and the pairs (source, teacher's
translation) become the training corpus of a student.

The output folder is a data folder a training run can point `data.data_dir` at: the distilled
train.<src>/train.<tgt>, links to the original folder's other splits (validation and test keep
their human references), and distill.json (what was done, every dropped line counted).

The source is cut into chunks. Lightning's prediction loop translates the unfinished ones: with
workers=N it runs N processes under its DDP strategy (on the CPU, a share of the cores each; on
GPUs, one GPU each; several nodes with trainer settings of the usual kind), each taking every N-th
chunk and writing each one to .chunks/ as it finishes (renamed into place, so a file there is
complete). A rerun of the same command skips the finished chunks; the first process assembles the
corpus in input order once every process has written its share.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seq2seq.errors import UserError
from seq2seq.text import publish

log = logging.getLogger(__name__)

CHUNKS = ".chunks"
PLAN = "plan.json"


@dataclass
class SourceLines:
    """The corpus's usable pairs: line numbers and source text, with what was dropped and why."""

    numbers: list[int]
    sources: list[str]
    total: int
    empty: int
    invalid_utf8: int


def read_usable_source(src_path: Path, tgt_path: Path | None) -> SourceLines:
    """Lines of the source (and, when given, the reference target, to keep the pairing checked)
    that a teacher can translate: empty lines and lines that are not UTF-8 are counted and
    skipped, never an error, so one bad line does not stop hours of translation."""
    if not src_path.is_file():
        raise UserError(f"{src_path}: no such file")
    raw_sources = src_path.read_bytes().splitlines()
    if tgt_path is not None:
        if not tgt_path.is_file():
            raise UserError(f"{tgt_path}: no such file")
        targets = len(tgt_path.read_bytes().splitlines())
        if targets != len(raw_sources):
            raise UserError(f"{src_path} has {len(raw_sources)} lines but {tgt_path} has {targets}: "
                            "the corpus is misaligned")
    numbers, sources, empty, invalid = [], [], 0, 0
    for number, raw in enumerate(raw_sources):
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            invalid += 1
            continue
        if not line:
            empty += 1
            continue
        numbers.append(number)
        sources.append(line)
    return SourceLines(numbers, sources, len(raw_sources), empty, invalid)


def plan_key(teachers: list[str], src_path: Path, options: dict[str, Any], chunk_lines: int) -> str:
    """What the finished chunks depend on: a rerun with other settings must not mix its chunks in."""
    digest = hashlib.sha256()
    for teacher in teachers:
        digest.update(Path(teacher, "weights.pt").read_bytes() if Path(teacher, "weights.pt").is_file() else b"")
    digest.update(src_path.read_bytes())
    digest.update(json.dumps([options, chunk_lines], sort_keys=True).encode())
    return digest.hexdigest()[:16]


def chunk_path(folder: Path, index: int) -> Path:
    return folder / CHUNKS / f"{index:06d}.txt"


def write_atomically(path: Path, lines: list[str]) -> None:
    # The process id in the temporary name: two processes never write into one temporary file.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.partial")
    temporary.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    publish(temporary, path)


def chunk_translation(teachers: list[str], options: dict[str, Any], chunks: list[list[str]], unfinished: list[int],
                      folder: Path, threads: int):
    """A LightningModule whose prediction loop translates this process's share of the unfinished
    chunks (every world_size-th one) and writes each chunk's file; it holds the teachers outside
    its parameters, so that Lightning neither wraps nor moves them."""
    import lightning
    import torch
    from torch.utils.data import DataLoader

    from seq2seq.tasks.translation.api import Translator

    class ChunkTranslation(lightning.LightningModule):
        def setup(self, stage: str) -> None:
            torch.set_num_threads(threads)
            self.translator = Translator.load(teachers, device=str(self.trainer.strategy.root_device))
            self.chosen = self.translator.options(**options)

        def predict_dataloader(self) -> DataLoader:
            share = unfinished[self.global_rank::self.trainer.world_size]
            return DataLoader(share, batch_size=None, shuffle=False)  # one chunk index a step

        def predict_step(self, index, batch_idx: int) -> None:
            index = int(index)
            target = chunk_path(folder, index)
            if target.is_file():
                return
            started = time.perf_counter()
            translations = [text.replace("\n", " ") for text in self.translator.translate(chunks[index], self.chosen)]
            write_atomically(target, translations)
            log.info("process %d: chunk %d of %d (%d lines) in %.1f s", self.global_rank, index + 1, len(chunks),
                     len(translations), time.perf_counter() - started)

        def on_predict_end(self) -> None:
            self.trainer.strategy.barrier("distillation chunks written")  # the assembly needs every share

    return ChunkTranslation()


def translate_chunks(teachers: list[str], options: dict[str, Any], chunks: list[list[str]], unfinished: list[int],
                     folder: Path, processes: int, threads: int, device: str) -> bool:
    """Runs the prediction loop; True in the process that goes on to assemble the corpus."""
    import lightning

    trainer = lightning.Trainer(accelerator="gpu" if device.startswith("cuda") else "cpu", devices=processes,
                                strategy="ddp" if processes > 1 else "auto", logger=False,
                                enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                                use_distributed_sampler=False)  # the module picks each process's chunks itself
    trainer.predict(chunk_translation(teachers, options, chunks, unfinished, folder, threads), return_predictions=False)
    return trainer.global_rank == 0


def choose_workers(workers: int | str, device: str) -> tuple[int, int, str]:
    """(processes, threads each, device): auto is one process per GPU, or on the CPU one per core
    (small-batch LSTM decoding gains more from processes than from a process's threads)."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if workers == "auto":
        workers = torch.cuda.device_count() if device == "cuda" else cores
    if not isinstance(workers, int) or workers < 1:
        raise UserError(f"workers={workers!r} must be auto or a count of 1 or more")
    return workers, max(1, cores // workers), device


def link_splits(data_dir: Path, output: Path, splits: list[str], langs: tuple[str, str]) -> list[str]:
    """Symlinks to the original folder's other splits, so the output is a whole data folder."""
    linked = []
    for split in splits:
        for lang in langs:
            source, target = data_dir / f"{split}.{lang}", output / f"{split}.{lang}"
            if not source.is_file():
                raise UserError(f"{source}: no such file (splits= names the files to keep beside the corpus)")
            if target.is_symlink() or target.exists():
                target.unlink()
            target.symlink_to(source.resolve())
            linked.append(target.name)
    return linked


def other_splits(data_dir: Path, langs: tuple[str, str], train_prefix: str) -> list[str]:
    """Every split of the folder but the one distilled: prefixes with both languages' files."""
    src_lang, tgt_lang = langs
    prefixes = {p.name[:-len(src_lang) - 1] for p in data_dir.glob(f"*.{src_lang}")}
    return sorted(p for p in prefixes if p != train_prefix and (data_dir / f"{p}.{tgt_lang}").is_file())


def distill(teachers: list[str], data_dir: Path, output: Path, src_lang: str, tgt_lang: str,
            train_prefix: str, splits: list[str], options: dict[str, Any], chunk_lines: int = 1000,
            workers: int | str = "auto", device: str = "auto") -> dict[str, Any] | None:
    """Write the distilled corpus into `output` (resuming finished chunks); returns distill.json
    (None in the other processes of a multi-process run)."""
    started = time.perf_counter()
    src_path, tgt_path = data_dir / f"{train_prefix}.{src_lang}", data_dir / f"{train_prefix}.{tgt_lang}"
    usable = read_usable_source(src_path, tgt_path if tgt_path.is_file() else None)
    if not usable.sources:
        raise UserError(f"{src_path}: no line to translate ({usable.empty} empty, {usable.invalid_utf8} not UTF-8)")
    if chunk_lines < 1:
        raise UserError(f"chunk_lines={chunk_lines} must be 1 or more")
    output.mkdir(parents=True, exist_ok=True)
    (output / CHUNKS).mkdir(exist_ok=True)
    key = plan_key(teachers, src_path, options, chunk_lines)
    plan_file = output / CHUNKS / PLAN
    if plan_file.is_file() and json.loads(plan_file.read_text())["key"] != key:
        raise UserError(f"{output} holds chunks of another teacher, source or settings; "
                        "choose another output= or delete it")
    if not plan_file.is_file():  # (the other processes of a multi-process run find it written)
        write_atomically(plan_file, [json.dumps({"key": key})])
    chunks = [usable.sources[i:i + chunk_lines] for i in range(0, len(usable.sources), chunk_lines)]
    unfinished = [i for i in range(len(chunks)) if not chunk_path(output, i).is_file()]
    done_before = len(chunks) - len(unfinished)
    processes, threads, device = choose_workers(workers, device)
    processes = max(1, min(processes, len(unfinished)))
    log.info("distilling %d lines in %d chunks (%d finished before) with %d process(es) x %d thread(s) on %s",
             len(usable.sources), len(chunks), done_before, processes, threads, device)
    if unfinished and not translate_chunks(teachers, options, chunks, unfinished, output, processes, threads, device):
        return None  # another process of the run assembles the corpus
    return assemble(output, usable, chunks, src_lang, tgt_lang, train_prefix, teachers, options,
                    link_splits(data_dir, output, splits, (src_lang, tgt_lang)), done_before,
                    time.perf_counter() - started)


def assemble(output: Path, usable: SourceLines, chunks: list[list[str]], src_lang: str, tgt_lang: str,
             train_prefix: str, teachers: list[str], options: dict[str, Any], linked: list[str],
             chunks_resumed: int, seconds: float) -> dict[str, Any]:
    """train.<src> / train.<tgt> from the chunks, in input order; pairs whose translation came out
    empty are dropped (and counted)."""
    sources, targets, empty_translations = [], [], 0
    for index, chunk in enumerate(chunks):
        translations = chunk_path(output, index).read_text(encoding="utf-8").split("\n")[:-1]
        if len(translations) != len(chunk):
            raise UserError(f"{chunk_path(output, index)} has {len(translations)} lines, not {len(chunk)}; "
                            "delete it and rerun")
        for source, translation in zip(chunk, translations):
            if translation.strip():
                sources.append(source)
                targets.append(translation)
            else:
                empty_translations += 1
    for lang, lines in ((src_lang, sources), (tgt_lang, targets)):
        write_atomically(output / f"{train_prefix}.{lang}", lines)
    report = {
        "teachers": [str(Path(t).resolve()) for t in teachers],
        "options": options,
        "lines": usable.total,
        "pairs": len(sources),
        "dropped": {"empty_source": usable.empty, "invalid_utf8": usable.invalid_utf8,
                    "empty_translation": empty_translations},
        "chunks": len(chunks),
        "chunks_resumed": chunks_resumed,
        "seconds": round(seconds, 1),
        "linked": linked,
    }
    (output / "distill.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
