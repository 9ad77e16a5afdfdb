"""seq2seq-export format=web: a folder that any static file server can serve, which translates (or
generates text) in the browser with onnxruntime-web, so the text never leaves the machine.

    SITE/index.html, page.js, pieces.js, search.js, offline.js, style.css   the page
    SITE/site.json       what the page loads: task, sizes, decoding defaults, the files to fetch
                         (with their sizes, for the progress bar and the offline cache)
    SITE/model/          the exported directory of format=onnx (the Python runtime reads it too),
                         plus tokenizer-<role>.json (the SentencePiece tables the page encodes with)
                         and shortlist-ids.json (a shortlist as ids) when the model has one
    SITE/vendor/         onnxruntime-web (seq2seq.web.runtime), with NOTICE.json

Written beside SITE and renamed into place, like format=onnx; re-exporting replaces an earlier site only.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from seq2seq.errors import UserError
from seq2seq.exporting import EXPORT_FILE, export_onnx, staged_folder

SITE_FILE = "site.json"
SITE_FORMAT = "seq2seq-web"
SITE_SOURCES = Path(__file__).parent / "site"
STYLE = Path(__file__).parent.parent / "serving" / "static" / "style.css"  # the served page's look
WEB_TASKS = ("translation", "language_model")
# sentencepiece_model.proto: TrainerSpec.ModelType
MODEL_TYPES = {1: "unigram", 2: "bpe", 3: "word", 4: "char"}


def tokenizer_table(model_file: Path) -> dict[str, Any]:
    """Every piece with its score and type, and the normalizer's settings, read from the model's
    protobuf (never by running anything from the file)."""
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    try:
        proto.ParseFromString(model_file.read_bytes())
    except Exception as error:  # protobuf's DecodeError and friends
        raise UserError(f"{model_file}: not a SentencePiece model ({error})") from None
    normalizer = proto.normalizer_spec
    if proto.trainer_spec.byte_fallback:
        raise UserError(f"{model_file}: byte-fallback tokenizers are not supported by format=web")
    return {"model_type": MODEL_TYPES.get(proto.trainer_spec.model_type, "unigram"),
            "normalization": normalizer.name or "nmt_nfkc",
            "add_dummy_prefix": normalizer.add_dummy_prefix,
            "remove_extra_whitespaces": normalizer.remove_extra_whitespaces,
            "escape_whitespaces": normalizer.escape_whitespaces,
            "pieces": [[p.piece, round(p.score, 6), int(p.type)] for p in proto.pieces]}


def write_json(path: Path, document: Any) -> None:
    path.write_text(json.dumps(document, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")


def translation_extras(model: Path, exported: dict[str, Any]) -> dict[str, Any]:
    """The decoding defaults (every option, as the Python runtime fills them in) and the
    shortlist as ids."""
    from seq2seq.tasks.translation.options import model_defaults
    from seq2seq.tasks.translation.shortlist_file import read_shortlist
    from seq2seq.tokenizer import Tokenizer

    extras: dict[str, Any] = {"decoding": model_defaults(exported["config"], str(model / EXPORT_FILE)).as_dict()}
    if exported.get("shortlist"):
        document = read_shortlist(model / exported["shortlist"], Tokenizer(model / exported["tokenizers"]["src"]),
                                  Tokenizer(model / exported["tokenizers"]["tgt"]))
        frequent = sorted(set(document.frequent) | {0, 1, 2, 3})
        write_json(model / "shortlist-ids.json", {"frequent": frequent, "rows": document.rows})
        extras["shortlist"] = "model/shortlist-ids.json"
    return extras


def export_web(model_dir: str | Path, output: str | Path, precision: str = "fp32") -> Path:
    """Export one model directory as a static site; returns the site's folder."""
    from seq2seq.web.runtime import copy_runtime

    output = Path(output)
    if output.exists() and not (output / SITE_FILE).is_file():
        raise UserError(f"output={output} exists and is not an exported site; choose a new folder")
    with staged_folder(output) as staging:
        model = export_onnx(model_dir, staging / "model", precision=precision)
        exported = json.loads((model / EXPORT_FILE).read_text(encoding="utf-8"))
        if exported["task"] not in WEB_TASKS:
            raise UserError(f"{model_dir} holds a {exported['task']} model; format=web exports translation "
                            "models and language models")
        tokenizers = {}
        for role, name in exported["tokenizers"].items():
            tokenizers[role] = f"model/tokenizer-{role}.json"
            write_json(staging / tokenizers[role], tokenizer_table(model / name))
        extras = translation_extras(model, exported) if exported["task"] == "translation" else {}
        runtime = copy_runtime(staging / "vendor")
        for source in SITE_SOURCES.iterdir():
            shutil.copy2(source, staging / source.name)
        shutil.copy2(STYLE, staging / STYLE.name)

        graphs = {role: f"model/{name}" for role, name in exported["graphs"].items()}
        # What the page downloads: the graphs, the tables, the runtime (the .model files and
        # export.json are for the Python runtime, which can read model/ as it is).
        fetched = [*graphs.values(), *tokenizers.values(), *([extras["shortlist"]] if "shortlist" in extras else []),
                   *(f"vendor/{name}" for name in runtime["files"] if name.endswith(".wasm"))]
        page = [p.name for p in sorted(staging.iterdir()) if p.is_file()]
        digest = hashlib.sha256()
        for path in fetched:
            digest.update((staging / path).read_bytes())
        # The id names the page's cache of the model files: a new export is a new cache.
        document = {"format": SITE_FORMAT, "format_version": 1, "id": digest.hexdigest()[:16], "task": exported["task"],
                    "precision": exported["precision"], "network": exported["network"],
                    "languages": {key: value for key, value in exported["config"].get("data", {}).items()
                                  if key in ("src_lang", "tgt_lang")}, "graphs": graphs, "tokenizers": tokenizers,
                    **extras, "runtime": runtime,
                    "files": [{"path": path, "bytes": (staging / path).stat().st_size} for path in fetched],
                    "page": [*page, SITE_FILE]}
        (staging / SITE_FILE).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return output
