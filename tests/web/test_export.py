"""seq2seq-export format=web without a browser: what the site holds, and what is refused in one line.
The npm package is stood in for by a cache folder of the pinned version's layout, so these run offline."""

from __future__ import annotations

import json

import pytest

from seq2seq.errors import UserError
from seq2seq.portable.exported import is_exported
from seq2seq.web import runtime
from seq2seq.web.export import SITE_FILE, export_web
from tests.helpers import run_in_process
from tests.serving.model_dirs import build_model_dirs


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    return build_model_dirs(tmp_path_factory.mktemp("web-export"))


@pytest.fixture
def npm_package(tmp_path, monkeypatch):
    """A stand-in for the installed onnxruntime-web, where the export looks for it."""
    monkeypatch.setenv("SEQ2SEQ_CACHE", str(tmp_path / "cache"))
    folder = runtime.install_folder() / "node_modules" / runtime.PACKAGE
    (folder / "dist").mkdir(parents=True)
    for name in runtime.FILES:
        (folder / "dist" / name).write_bytes(b"stand-in for " + name.encode())
    (folder / "package.json").write_text(json.dumps({"version": runtime.pinned_version(), "license": "MIT"}))
    return folder


def test_a_site_holds_the_page_the_model_the_tables_and_the_runtime(model_dirs, npm_package, tmp_path):
    site = export_web(model_dirs["translator"], tmp_path / "site")
    document = json.loads((site / SITE_FILE).read_text(encoding="utf-8"))
    assert document["task"] == "translation" and document["format"] == "seq2seq-web"
    for entry in document["files"]:
        assert (site / entry["path"]).stat().st_size == entry["bytes"]
    assert {"index.html", "page.js", "pieces.js", "search.js", "offline.js", "style.css"} <= set(document["page"])
    assert document["decoding"]["beam"] >= 1 and "max_len_ratio" in document["decoding"]
    assert document["languages"] == {"src_lang": "src", "tgt_lang": "tgt"}
    notice = json.loads((site / "vendor" / "NOTICE.json").read_text())
    assert notice["version"] == runtime.pinned_version() and notice["license"] == "MIT"
    assert notice["integrity"].startswith("sha512-")
    table = json.loads((site / "model" / "tokenizer-src.json").read_text(encoding="utf-8"))
    assert table["model_type"] == "unigram" and table["pieces"][3][2] == 3  # </s>: a control piece
    assert is_exported(site / "model")  # the Python runtime reads the same folder

    again = export_web(model_dirs["translator"], site)  # re-exporting replaces the earlier site
    assert json.loads((again / SITE_FILE).read_text())["id"] == document["id"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "site"]  # nothing half-written beside it


def test_what_format_web_refuses(model_dirs, npm_package, tmp_path, monkeypatch):
    with pytest.raises(UserError, match="format=web exports translation models and language models"):
        export_web(model_dirs["classifier"], tmp_path / "site")
    assert not (tmp_path / "site").exists() and not list(tmp_path.glob(".site*"))
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="exists and is not an exported site"):
        export_web(model_dirs["lm"], tmp_path / "notes")
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"

    monkeypatch.setenv("SEQ2SEQ_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("PATH", str(tmp_path / "no-such-bin"))
    result = run_in_process(["seq2seq-export", f"model={model_dirs['lm']}", "format=web",
                             f"output={tmp_path / 'lm-site'}"], cwd=tmp_path)
    assert result.returncode != 0
    assert "npm is not installed" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "lm-site").exists()
