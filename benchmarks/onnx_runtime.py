"""The exported runtime (onnxruntime) beside PyTorch, side by side in one run: decoding speed,
start-up time to the first translation, and the installed size of each environment.

    python benchmarks/onnx_runtime.py model=RUN/model rounds=3 [runtime_venv=/tmp/rtv] [sentences=N]

The model directory is exported (fp32 and int8) into benchmarks/results/exported/ first. Each
round runs every variant in a fresh subprocess, in alternating order, so that all of them see
the same machine state: Multi30k test_2016_flickr (or its first N sentences) translated after a
warm-up of 50 sentences, decoding time only, median over the rounds, BLEU of the output and the
share of sentences equal to PyTorch fp32's output of the same search. Start-up: wall time of
`seq2seq-translate model=... beam=5` on one line from a new process (imports, load, first
translation), median over the rounds; with runtime_venv=, also from a virtualenv with only the
runtime installed (pip install ./runtime). Installed size: the site-packages of this environment
and of runtime_venv, without pip and setuptools. Prints a table and writes
benchmarks/results/onnx_runtime.json.

Variants: `<runtime>_<precision>_<search>`: runtime torch | onnx, precision fp32 | int8, search
beam5 | greedy; every variant uses the model's shortlist when it has one (shortlist=auto).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
VARIANTS = [f"{runtime}_{precision}_{search}" for search in ("beam5", "greedy")
            for runtime in ("torch", "onnx") for precision in ("fp32", "int8")]


def worker(model_dir: str, exported: dict[str, str], variant: str, src_file: str) -> None:
    """Runs in the subprocess: one JSON line on stdout."""
    from seq2seq.text import read_lines

    runtime, precision, search = variant.split("_")
    sources = read_lines(Path(src_file))
    if runtime == "torch":
        import torch

        from seq2seq.tasks.translation.api import Translator

        torch.set_grad_enabled(False)
        translator = Translator.load(model_dir, device="cpu", precision=precision)
    else:
        from seq2seq.portable import load

        translator = load(exported[precision])
    beam = 5 if search == "beam5" else 1
    translator.translate(sources[:50], beam=beam)  # one-time costs (allocator, tables) outside the timing
    start = time.perf_counter()
    outputs = translator.translate(sources, beam=beam)
    seconds = time.perf_counter() - start
    print(json.dumps({"variant": variant, "seconds": seconds, "outputs": outputs}), flush=True)


def run_worker(model_dir: str, exported: dict[str, str], variant: str, src_file: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(HERE.parent))
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", model_dir, json.dumps(exported), variant,
               src_file]
    done = subprocess.run(command, env=env, check=True, capture_output=True, text=True, cwd=HERE.parent)
    return json.loads(next(line for line in done.stdout.splitlines() if line.startswith("{")))


def start_up_seconds(command: list[str], line: str) -> float:
    start = time.perf_counter()
    subprocess.run(command, input=line + "\n", check=True, capture_output=True, text=True)
    return time.perf_counter() - start


def installed_mb(site_packages: Path) -> float:
    total = 0
    for path in site_packages.iterdir():
        if path.name.split("-")[0].lower() in ("pip", "setuptools", "_distutils_hack", "distutils-precedence.pth"):
            continue
        files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()]
        total += sum(f.stat().st_size for f in files)
    return round(total / 1e6, 1)


def main() -> None:
    args = dict(a.split("=", 1) for a in sys.argv[1:])
    model_dir = str(Path(args["model"]).resolve())
    rounds = int(args.get("rounds", 3))
    variants = args["variants"].split(",") if "variants" in args else VARIANTS
    runtime_venv = Path(args["runtime_venv"]).resolve() if "runtime_venv" in args else None
    config = json.loads((Path(model_dir) / "model.json").read_text())
    data_dir = Path(args.get("data", config["data"]["data_dir"]))

    from benchmarks.reporting import RESULTS, report
    from seq2seq.exporting import export_onnx
    from seq2seq.metrics import score_corpus
    from seq2seq.text import read_lines

    sentences = int(args.get("sentences", 0)) or None
    src_file, ref_file = data_dir / "test_2016_flickr.de", data_dir / "test_2016_flickr.en"
    refs = read_lines(ref_file)[:sentences]
    if sentences:
        src_file = RESULTS / "onnx_runtime_sources.txt"
        src_file.parent.mkdir(parents=True, exist_ok=True)
        src_file.write_text("\n".join(read_lines(data_dir / "test_2016_flickr.de")[:sentences]) + "\n")
    exported = {}
    for precision in ("fp32", "int8"):
        target = RESULTS / "exported" / f"{Path(model_dir).parent.name}-{precision}"
        exported[precision] = str(export_onnx(model_dir, target, precision=precision))

    runs: dict[str, list[dict]] = {}
    starts: dict[str, list[float]] = {}
    line = read_lines(src_file)[0]
    bin_dir = Path(sys.executable).parent
    start_commands = {"torch_fp32": [str(bin_dir / "seq2seq-translate"), f"model={model_dir}", "precision=fp32"],
                      "onnx_fp32": [str(bin_dir / "seq2seq-translate"), f"model={exported['fp32']}"],
                      "onnx_int8": [str(bin_dir / "seq2seq-translate"), f"model={exported['int8']}"]}
    if runtime_venv is not None:
        start_commands["onnx_fp32_runtime_only_install"] = [str(runtime_venv / "bin" / "seq2seq-translate"),
                                                            f"model={exported['fp32']}"]
    for number in range(rounds):
        order = variants if number % 2 == 0 else list(reversed(variants))
        for variant in order:
            item = run_worker(model_dir, exported, variant, str(src_file))
            runs.setdefault(variant, []).append(item)
            print(f"round {number + 1}/{rounds}: {variant} {item['seconds']:.2f} s", file=sys.stderr)
        for name, command in start_commands.items():
            starts.setdefault(name, []).append(start_up_seconds([*command, "beam=5"], line))

    result: dict = {"model": model_dir, "trained": config.get("trained"), "sentences": len(refs), "rounds": rounds,
                    "search": "shortlist=auto (the model's shortlist when it has one), batch_tokens 4000"}
    for variant in variants:
        items = runs[variant]
        seconds = statistics.median(item["seconds"] for item in items)
        outputs = items[0]["outputs"]
        search = variant.split("_")[2]
        entry = {"seconds": round(seconds, 3), "sentences_per_s": round(len(outputs) / seconds, 1),
                 "bleu": round(score_corpus(outputs, refs, ("bleu",))["bleu"].score, 2)}
        reference = runs.get(f"torch_fp32_{search}")
        if reference:
            entry["same_as_torch_fp32"] = round(
                sum(a == b for a, b in zip(outputs, reference[0]["outputs"])) / len(outputs), 4)
            entry["speedup_vs_torch_fp32"] = round(statistics.median(r["seconds"] for r in reference) / seconds, 2)
        result[variant] = entry
    result["start_up_to_first_translation_s"] = {name: round(statistics.median(values), 2)
                                                 for name, values in starts.items()}
    result["exported_mb"] = {precision: round(sum(f.stat().st_size for f in Path(path).iterdir()) / 1e6, 1)
                             for precision, path in exported.items()}
    result["model_dir_mb"] = round(sum(f.stat().st_size for f in Path(model_dir).iterdir() if f.is_file()) / 1e6, 1)
    sizes = {"this_environment (full install)": installed_mb(Path(sysconfig.get_paths()["purelib"]))}
    if runtime_venv is not None:
        site = next((runtime_venv / "lib").glob("python*/site-packages"))
        sizes["runtime_venv (pip install ./runtime[serve])"] = installed_mb(site)
    result["installed_mb"] = sizes
    report(result, Path(args.get("out", RESULTS / "onnx_runtime.json")))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], json.loads(sys.argv[3]), sys.argv[4], sys.argv[5])
    else:
        sys.path.insert(0, str(HERE.parent))
        main()
