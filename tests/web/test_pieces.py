"""The page's SentencePiece (seq2seq/web/site/pieces.js, run by Node.js) against sentencepiece
itself: the same ids for the same text, and the same text back, for each kind of model the
toolkit trains (unigram, BPE, word; char with verbatim text)."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from seq2seq.tokenizer import SentencePieceSettings, train_or_load
from seq2seq.web.export import SITE_SOURCES, tokenizer_table

WORDS = ["der", "Hund", "läuft", "über", "die", "Wiese", "ein", "Mann", "fährt", "Fahrrad", "zwei", "Kinder",
         "spielen", "im", "Schnee", "Straße", "café", "naïve", "groß"]
# Beside plain sentences: runs of spaces, leading and trailing spaces, characters the model never
# saw (one and several in a row), NFKC-folded forms (full-width letters, the ligature ﬁ, ²).
EDGE_CASES = ["  der   Hund  ", "der Hund läuft 🐕🐕 über", "ЖЖЖ Hund", "ein Ｍａｎｎ fährt", "ﬁsch ²", "Q",
              "der\tHund"]

SCRIPT = """
import { Pieces } from "./pieces.mjs";
import { readFileSync } from "node:fs";
const job = JSON.parse(readFileSync(0, "utf8"));
const pieces = new Pieces(job.table);
process.stdout.write(JSON.stringify({ ids: job.lines.map((l) => pieces.encode(l)),
                                      texts: job.ids.map((ids) => pieces.decode(ids)) }));
"""


def node() -> str:
    found = shutil.which("node")
    if found is None:
        pytest.fail("the page's tokenizer is tested with Node.js: install nodejs (the machine's, or Debian's)")
    return found


def run_pieces(folder: Path, table: dict, lines: list[str], ids: list[list[int]]) -> dict:
    shutil.copy(SITE_SOURCES / "pieces.js", folder / "pieces.mjs")  # .mjs: an ES module to Node
    (folder / "run.mjs").write_text(SCRIPT, encoding="utf-8")
    done = subprocess.run([node(), "run.mjs"], cwd=folder, input=json.dumps({"table": table, "lines": lines,
                                                                             "ids": ids}),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def sentences(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 9))) for _ in range(count)]


@pytest.mark.parametrize("model_type, vocab_size", [("unigram", 50), ("bpe", 50), ("word", 20)])
def test_pieces_encode_and_decode_as_sentencepiece_does(tmp_path, model_type, vocab_size):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(sentences(500, seed=1)) + "\n", encoding="utf-8")
    tokenizer = train_or_load([corpus], tmp_path / "cache", SentencePieceSettings(vocab_size=vocab_size,
                                                                                 model_type=model_type))
    lines = sentences(200, seed=2) + EDGE_CASES
    expected = tokenizer.encode(lines)
    got = run_pieces(tmp_path, tokenizer_table(tokenizer.model_file), lines, expected)
    mismatches = [(line, want, have) for line, want, have in zip(lines, expected, got["ids"]) if want != have]
    assert not mismatches, mismatches[:3]
    assert got["texts"] == tokenizer.decode(expected)
    assert any(1 in ids for ids in expected), "no edge case had an unknown character"


def test_a_verbatim_character_model_keeps_spaces_and_newlines(tmp_path):
    text = "".join(f"Zeile {i}:  der Hund läuft.\n" for i in range(100))
    (tmp_path / "text.txt").write_text(text, encoding="utf-8")
    tokenizer = train_or_load([tmp_path / "text.txt"], tmp_path / "cache",
                              SentencePieceSettings(vocab_size=60, model_type="char", preserve_text=True))
    prompts = ["Zeile 7:  der", "  zwei\n\nLeer ", "Ω unbekannt\n"]
    expected = [tokenizer.encode_text(p) for p in prompts]
    got = run_pieces(tmp_path, tokenizer_table(tokenizer.model_file), prompts, expected)
    assert got["ids"] == expected
    assert got["texts"][:1] == ["Zeile 7:  der"]
