"""Random Unicode through the tokenizer, the translator and the generator: no crash, one output per input."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seq2seq import Generator, Translator
from seq2seq.bundle import save_bundle
from tests.helpers import UNICODE_TEXT, char_datamodule, tiny_lm

# Any code point but surrogates (not encodable as UTF-8, so never in a decoded file).
UNICODE = st.text(st.characters(exclude_categories=("Cs",)), max_size=80)
LINES = st.lists(UNICODE.map(lambda s: s.replace("\n", " ").replace("\r", " ")), min_size=1, max_size=6)
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def translator(trained_reversal) -> Translator:
    return Translator.load(trained_reversal / "run" / "model", device="cpu")


@pytest.fixture(scope="module")
def generator(tmp_path_factory) -> Generator:
    work = tmp_path_factory.mktemp("fuzz-lm")
    data = char_datamodule(work, UNICODE_TEXT)
    return Generator.load(save_bundle(work / "model", tiny_lm(data.tokenizer.vocab_size), "lstm_lm",
                                      data.tokenizer_files()), device="cpu")


@FUZZ
@given(lines=LINES)
def test_tokenizer_never_fails_on_any_text(translator, lines):
    ids = translator.src_tokenizer.encode(lines)
    assert len(ids) == len(lines)
    assert len(translator.src_tokenizer.decode(ids)) == len(lines)


@FUZZ
@given(lines=LINES, beam=st.sampled_from([1, 3]))
def test_translator_returns_one_line_per_input_line(translator, lines, beam):
    outputs = translator.translate(lines, beam=beam)
    assert len(outputs) == len(lines)
    assert all(isinstance(o, str) and "\n" not in o for o in outputs)


@FUZZ
@given(prompt=UNICODE, samples=st.integers(1, 3))
def test_generator_continues_any_prompt(generator, prompt, samples):
    texts = generator.generate(prompt, max_chars=12, num_samples=samples, seed=0)
    assert len(texts) == samples and all(len(t) == 12 for t in texts)  # verbatim characters, no <unk>
    assert generator.score(prompt + "ab")["chars"] >= 1
