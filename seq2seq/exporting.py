"""seq2seq-export format=onnx: a model directory as an exported directory that runs without PyTorch.

    OUT/export.json      format and version, task, opset, precision, the graphs' file names, what
                         the runtime needs of the model (sizes, attention, labels) and of model.json
                         (languages, decoding defaults, training summary)
    OUT/*.onnx           the graphs of seq2seq.onnx_graphs
    OUT/<tokenizers>     the SentencePiece models, under the names model.json gave them
    OUT/shortlist.json   the vocabulary shortlist, when the model directory has one

precision=int8 quantizes the graphs' weights with onnxruntime's own dynamic quantization (int8
weights, activations quantized per call): the products with constant weights (the encoder's LSTM,
the decoder's recurrent and attention products, the classifier); the output layer's weights are
an input of the step graph (a shortlist picks them per batch) and stay fp32.

The directory is written beside OUT and renamed into place: a failed export leaves no half
directory, and re-exporting replaces an earlier export only.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from seq2seq.bundle import Bundle, load_bundle
from seq2seq.errors import UserError

EXPORT_FILE = "export.json"
FORMAT_NAME = "seq2seq-onnx"
FORMAT_VERSION = 1
EXPORT_PRECISIONS = ("fp32", "int8")
# What an exported directory keeps of model.json, besides the model's sizes.
KEPT_CONFIG = ("data", "decoding", "trained", "labels", "lowercase")


def translation_graphs(bundle: Bundle) -> tuple[dict[str, Any], dict[str, Any]]:
    from seq2seq import onnx_graphs

    model = bundle.model
    decoder = model.decoder
    graphs = {"encoder": onnx_graphs.translation_encoder(model),
              "decoder_step": onnx_graphs.translation_decoder_step(model),
              "output_layer": onnx_graphs.translation_output_layer(model)}
    network = {"decoder_layers": decoder.num_layers, "decoder_hidden_size": decoder.hidden_size,
               "output_size": decoder.output_size, "input_feeding": decoder.input_feeding,
               "attention": model.config["attention"], "attention_keys": onnx_graphs.attention_has_keys(model),
               "src_vocab_size": model.config["src_vocab_size"], "tgt_vocab_size": model.config["tgt_vocab_size"]}
    return graphs, network


def language_model_graphs(bundle: Bundle) -> tuple[dict[str, Any], dict[str, Any]]:
    from seq2seq import onnx_graphs

    model = bundle.model
    return ({"lm_step": onnx_graphs.language_model_step(model)},
            {"layers": model.num_layers, "hidden_size": model.hidden_size, "vocab_size": model.vocab_size})


def classifier_graphs(bundle: Bundle) -> tuple[dict[str, Any], dict[str, Any]]:
    from seq2seq import onnx_graphs

    model = bundle.model
    return ({"classifier": onnx_graphs.classifier(model)},
            {"num_classes": model.config["num_classes"], "pooling": model.config["pooling"]})


GRAPHS_BY_TASK = {"seq2seq": ("translation", translation_graphs),
                  "lstm_lm": ("language_model", language_model_graphs),
                  "lstm_classifier": ("classification", classifier_graphs)}


def quantize(source: Path, target: Path) -> None:
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Its advice to run shape inference first is for graphs without shapes; ours declare them.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)


@contextlib.contextmanager
def staged_folder(output: Path) -> Iterator[Path]:
    """A new folder beside `output` to write into, renamed to `output` when the block ends
    (replacing an earlier export there as a whole: the caller checked that it is one), removed
    when the block fails, so no half-written export is ever left."""
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        yield staging
        staging.chmod(0o755)
        if output.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{output.name}.old.", dir=output.parent))
            output.rename(old / output.name)
            staging.rename(output)
            shutil.rmtree(old)
        else:
            staging.rename(output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def export_onnx(model_dir: str | Path, output: str | Path, precision: str = "fp32") -> Path:
    """Export one model directory; returns the exported directory."""
    import onnx

    from seq2seq.onnx_graphs import OPSET

    if precision not in EXPORT_PRECISIONS:
        raise UserError(f"precision={precision!r} is not one of {', '.join(EXPORT_PRECISIONS)} for format=onnx")
    output = Path(output)
    if output.exists() and not (output / EXPORT_FILE).is_file():
        raise UserError(f"output={output} exists and is not an exported model directory; choose a new folder")
    bundle = load_bundle(model_dir)
    model_type = bundle.config.get("model_type")
    if model_type not in GRAPHS_BY_TASK:
        raise UserError(f"{model_dir} holds a {model_type} model; format=onnx exports translation, "
                        f"language_model and classification models")
    task, build = GRAPHS_BY_TASK[model_type]
    graphs, network = build(bundle)

    with staged_folder(output) as staging:
        files = {}
        for name, graph in graphs.items():
            files[name] = f"{name}.onnx"
            if precision == "int8":
                plain = staging / f"{name}.fp32.onnx"
                onnx.save(graph, plain)
                quantize(plain, staging / files[name])
                plain.unlink()
            else:
                onnx.save(graph, staging / files[name])
        tokenizers = {}
        for role, tokenizer in bundle.tokenizers.items():
            tokenizers[role] = tokenizer.model_file.name
            shutil.copy2(tokenizer.model_file, staging / tokenizer.model_file.name)
        extra = {}
        shortlist = Path(model_dir) / "shortlist.json"
        if task == "translation" and shortlist.is_file():
            shutil.copy2(shortlist, staging / shortlist.name)
            extra["shortlist"] = shortlist.name
        document = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "task": task,
                    "model_type": model_type, "opset": OPSET, "precision": precision, "graphs": files,
                    "tokenizers": tokenizers, "network": network, **extra,
                    "config": {key: bundle.config[key] for key in KEPT_CONFIG if key in bundle.config},
                    "exported_from": str(Path(model_dir).resolve())}
        (staging / EXPORT_FILE).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return output
