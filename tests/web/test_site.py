"""seq2seq-export format=web in a real headless Chromium, served by a plain static file server on
127.0.0.1: the page translates as the Python runtime does (greedy, beam, shortlist), generates
text as it is sampled, sends no request off 127.0.0.1, and works once the server is gone.
Run with `pytest -m browser` (needs Debian's chromium and chromium-driver, and npm for the export).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from seq2seq.portable.language_model import Generator
from seq2seq.portable.translation import Translator
from tests.chromium import requested_urls, start_chromium
from tests.helpers import TINY_REVERSAL, make_reversal_corpus, run
from tests.serving.model_dirs import build_model_dirs

pytestmark = pytest.mark.browser

SAMPLE = 40  # sentences compared with the Python runtime


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class StaticServer:
    """`python -m http.server` on 127.0.0.1: what any static host does, nothing more."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port, self.process = folder, free_port(), None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "http.server", str(self.port), "--bind", "127.0.0.1",
                                         "--directory", str(self.folder)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("the static server did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


@pytest.fixture(scope="module")
def sites(tmp_path_factory):
    """Exported sites of a small trained translator (unigram pieces, with a shortlist) and of a
    character language model."""
    root = tmp_path_factory.mktemp("web")
    make_reversal_corpus(root / "corpus", {"train": 2500, "val": 50, "test": SAMPLE}, seed=11)
    settings = [setting for setting in TINY_REVERSAL if not setting.startswith("tokenizer.")]
    run(["seq2seq-train", *settings, "tokenizer.model_type=unigram", "tokenizer.vocab_size=60",
         "tokenizer.joint=true", "data.data_dir=corpus", "trainer.max_epochs=3", "hydra.run.dir=run",
         "evaluate_test=false"], cwd=root)
    run(["seq2seq-shortlist", "model=run/model", "frequent=8", "per_source=8"], cwd=root)
    lm = build_model_dirs(root / "untrained")["lm"]
    for name, model in (("translator", root / "run" / "model"), ("lm", lm)):
        run(["seq2seq-export", f"model={model}", "format=web", f"output={root / ('site-' + name)}"], cwd=root)
    return {"translator": root / "site-translator", "lm": root / "site-lm",
            "sentences": (root / "corpus" / "test.src").read_text(encoding="utf-8").splitlines()}


@pytest.fixture(scope="module")
def browser():
    driver = start_chromium(network_log=True)
    yield driver
    driver.quit()


def wait_for_load(driver, button: str) -> None:
    WebDriverWait(driver, 120).until(
        lambda d: d.find_element(By.ID, "error").text or d.find_element(By.ID, button).is_enabled())
    assert not driver.find_element(By.ID, "error").text


def set_field(driver, element_id: str, value: str) -> None:
    # The value set directly: send_keys of 40 lines types 40 lines key by key.
    driver.execute_script("document.getElementById(arguments[0]).value = arguments[1]", element_id, value)


def translate_on_page(driver, lines: list[str], beam: int, shortlist: bool | None = None) -> list[str]:
    set_field(driver, "source", "\n".join(lines))
    set_field(driver, "beam", str(beam))
    if shortlist is not None:
        box = driver.find_element(By.ID, "shortlist")
        if box.is_selected() != shortlist:
            box.click()
    driver.execute_script("document.getElementById('translation-timing').textContent = ''")
    driver.find_element(By.ID, "translate").click()
    WebDriverWait(driver, 300).until(
        lambda d: d.find_element(By.ID, "error").text or d.find_element(By.ID, "translation-timing").text)
    assert not driver.find_element(By.ID, "error").text
    return [item.text for item in driver.find_elements(By.CSS_SELECTOR, "#translations li")]


def agreement(page: list[str], python: list[str]) -> float:
    assert len(page) == len(python)
    return sum(a == b for a, b in zip(page, python)) / len(python)


def test_the_page_translates_as_the_python_runtime_and_stays_on_127_0_0_1(sites, browser):
    server = StaticServer(sites["translator"])
    server.start()
    try:
        browser.get_log("performance")  # what came before is not this page's
        # Every text the status line shows, from the first script on.
        browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": """
            window.statusTexts = [];
            document.addEventListener('DOMContentLoaded', () => new MutationObserver(() =>
                window.statusTexts.push(document.getElementById('status').textContent))
              .observe(document.getElementById('status'), {childList: true, characterData: true, subtree: true}));
        """})
        browser.get(server.url + "/")
        wait_for_load(browser, "translate")
        shown = browser.execute_script("return window.statusTexts")
        loading = [text for text in shown if text.startswith("Loading the model:")]
        assert loading and loading[-1].split(": ")[1].split(" of ")[0] == loading[-1].split(" of ")[1].split()[0]
        assert not browser.find_element(By.ID, "progress").is_displayed()
        status = browser.find_element(By.ID, "status").text
        assert status.startswith("Loaded in") and "onnxruntime-web" in status
        assert not browser.find_element(By.ID, "shortlist-option").get_attribute("hidden")

        python = Translator.load(sites["translator"] / "model")
        lines = sites["sentences"]
        expected = {}
        for beam, shortlist in ((1, False), (3, False), (3, True)):
            page = translate_on_page(browser, lines, beam, shortlist)
            # One sentence at a time, as the page does: a batch's shortlist is the union of its
            # sentences' candidates, so a batched shortlist search chooses among more pieces.
            expected[beam, shortlist] = [python.translate([line], beam=beam, shortlist=str(shortlist).lower())[0]
                                         for line in lines]
            pairs = [p for p in zip(page, expected[beam, shortlist]) if p[0] != p[1]]
            assert agreement(page, expected[beam, shortlist]) >= 0.95, (beam, shortlist, pairs[:5])
            assert any(page), "the translations are all empty"

        urls = requested_urls(browser)
        assert any(u.endswith("/model/decoder_step.onnx") for u in urls)
        outside = [u for u in urls if not u.startswith(server.url + "/") and not u.startswith(("data:", "blob:"))]
        assert not outside, outside
    finally:
        server.stop()

    # The server is gone: the loaded page goes on translating, and a reload comes from the caches.
    assert agreement(translate_on_page(browser, lines[:10], 1, False), expected[1, False][:10]) >= 0.9
    browser.refresh()
    wait_for_load(browser, "translate")
    assert agreement(translate_on_page(browser, lines[:10], 3, True), expected[3, True][:10]) >= 0.9


def test_the_page_generates_text_as_it_is_sampled(sites, browser):
    server = StaticServer(sites["lm"])
    server.start()
    try:
        browser.get(server.url + "/")
        wait_for_load(browser, "generate")
        assert browser.find_element(By.ID, "language_model").is_displayed()
        set_field(browser, "prompt", "line 1")
        set_field(browser, "max-chars", "60")
        browser.find_element(By.ID, "greedy").click()
        browser.find_element(By.ID, "generate").click()
        WebDriverWait(browser, 60).until(lambda d: d.find_element(By.ID, "generate").is_enabled())
        generated = browser.find_element(By.ID, "generated").text
        python = Generator.load(sites["lm"] / "model")
        expected = "".join(pieces[0] for pieces in python.stream("line 1", max_chars=60, greedy=True))
        assert generated == "line 1" + expected

        # Sampling: the text arrives a character at a time, each a character of the model's. The
        # page's length is read at every frame the browser draws.
        browser.find_element(By.ID, "greedy").click()
        set_field(browser, "max-chars", "2000")
        browser.execute_script("""
            window.seenLengths = [];
            const look = () => {
              window.seenLengths.push(document.getElementById('generated').textContent.length);
              if (window.seenLengths.length < 2000) requestAnimationFrame(look);
            };
            requestAnimationFrame(look);""")
        browser.find_element(By.ID, "generate").click()
        WebDriverWait(browser, 120).until(lambda d: d.find_element(By.ID, "generate").is_enabled())
        sampled = browser.find_element(By.ID, "generated").get_attribute("textContent")
        assert len(sampled) == len("line 1") + 2000
        seen = [n for n in browser.execute_script("return window.seenLengths") if len("line 1") < n < len(sampled)]
        assert len(set(seen)) >= 3, f"the text did not arrive step by step: {sorted(set(seen))}"
        table = json.loads((sites["lm"] / "model" / "tokenizer-text.json").read_text(encoding="utf-8"))
        alphabet = {piece.replace("\u2581", " ") for piece, _, _ in table["pieces"]}
        assert set(sampled[len("line 1"):]) <= alphabet
    finally:
        server.stop()
