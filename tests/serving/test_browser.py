"""The web page of seq2seq-serve in a real headless Chromium: translate with a heatmap, watch
generated text stream in, classify.

Needs Debian's chromium and chromium-driver (`.ci/run` installs them when missing); selenium is
pointed at /usr/bin/chromedriver, so nothing is downloaded at run time. Run with `pytest -m browser`.
Set SEQ2SEQ_SCREENSHOTS=DIR to keep screenshots of the page.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from seq2seq.serving.app import create_app
from seq2seq.serving.models import ServedModel, load_models
from tests.chromium import start_chromium
from tests.serving.model_dirs import SlowGenerator, build_model_dirs, serving

pytestmark = pytest.mark.browser

@pytest.fixture(scope="module")
def page_server(tmp_path_factory):
    dirs = build_model_dirs(tmp_path_factory.mktemp("browser"))
    models = load_models([(None, str(path)) for path in dirs.values()], device="cpu")
    # 3 ms a character: a 300-character text takes about a second, long enough to see it arrive.
    models["lm"] = ServedModel("lm", "language_model", SlowGenerator(models["lm"].model, delay=0.003))
    with serving(create_app(models)) as url:
        yield url, models


@pytest.fixture(scope="module")
def browser():
    driver = start_chromium()
    yield driver
    driver.quit()


def screenshot(driver, name: str) -> None:
    folder = os.environ.get("SEQ2SEQ_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(folder) / f"{name}.png"))


def open_page(driver, url: str, model: str) -> None:
    driver.get(url + "/")
    wait = WebDriverWait(driver, 20)
    wait.until(lambda d: len(Select(d.find_element(By.ID, "model")).options) == 4)
    Select(driver.find_element(By.ID, "model")).select_by_value(model)


def fill(driver, element_id: str, text: str) -> None:
    """Type into a field as a person would, after emptying it."""
    field = driver.find_element(By.ID, element_id)
    field.clear()
    field.send_keys(text)


def test_page_translates_a_sentence_and_draws_the_attention_heatmap(page_server, browser):
    url, models = page_server
    open_page(browser, url, "translator")
    assert browser.find_element(By.ID, "translation").is_displayed()
    assert not browser.find_element(By.ID, "language_model").is_displayed()
    assert "src → tgt" in browser.find_element(By.ID, "model-info").text
    fill(browser, "source", "red dog runs")
    fill(browser, "beam", "3")
    browser.find_element(By.ID, "translate").click()
    WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#heatmap tbody tr"))
    expected = models["translator"].model.translate(["red dog runs"], beam=3, return_hypotheses=True)[0][0]
    assert browser.find_element(By.ID, "translation-output").get_attribute("textContent") == expected.text
    rows = browser.find_elements(By.CSS_SELECTOR, "#heatmap tbody tr")
    columns = browser.find_elements(By.CSS_SELECTOR, "#heatmap thead th")
    source_pieces = models["translator"].model.src_tokenizer.encode_pieces("red dog runs")
    assert [c.text for c in columns[1:]] == source_pieces
    assert len(rows) == len(expected.tokens) + 1  # a row per target piece and one for </s>
    cells = browser.find_elements(By.CSS_SELECTOR, "#heatmap tbody td")
    assert len(cells) == len(rows) * len(source_pieces)
    assert all(c.value_of_css_property("background-color").startswith("rgb") for c in cells)
    assert browser.find_element(By.ID, "error").text == ""
    screenshot(browser, "translate")


def test_generated_text_streams_into_the_page(page_server, browser):
    url, _ = page_server
    open_page(browser, url, "lm")
    fill(browser, "prompt", "line 1")
    fill(browser, "max-chars", "300")
    browser.find_element(By.ID, "generate").click()
    lengths = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        state = browser.execute_script(
            "const o = document.getElementById('generated'); return [o.textContent.length, o.dataset.done];")
        lengths.append(state[0])
        if state[1] == "true":
            break
        time.sleep(0.05)
    assert lengths[-1] == 300, lengths
    partial = {n for n in lengths if 0 < n < 300}
    assert len(partial) >= 3, f"the text did not arrive piece by piece: {lengths}"
    assert int(browser.find_element(By.ID, "generated").get_attribute("data-chunks")) >= 3
    assert browser.find_element(By.ID, "error").text == ""
    screenshot(browser, "generate")


def test_page_shows_a_label_with_probabilities_and_errors(page_server, browser):
    url, models = page_server
    open_page(browser, url, "classifier")
    fill(browser, "classify-text", "red dog runs")
    browser.find_element(By.ID, "classify").click()
    WebDriverWait(browser, 20).until(lambda d: d.find_element(By.ID, "label").text)
    expected = models["classifier"].model.classify(["red dog runs"])[0]
    assert browser.find_element(By.ID, "label").text.startswith(expected.label)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#probabilities .bar")) == 2
    # a bad request shows the server's message, naming the field
    open_page(browser, url, "translator")
    fill(browser, "beam", "99")
    fill(browser, "source", "red")
    browser.find_element(By.ID, "translate").click()
    WebDriverWait(browser, 20).until(lambda d: d.find_element(By.ID, "error").text)
    assert browser.find_element(By.ID, "error").text.startswith("beam: ")


def test_page_forecasts_a_series(page_server, browser):
    url, models = page_server
    open_page(browser, url, "forecaster")
    fill(browser, "values", "1, 2, , 4, 5, 6, 7, 8, 9, 10")
    fill(browser, "horizon", "3")
    browser.find_element(By.ID, "run-forecast").click()
    WebDriverWait(browser, 20).until(lambda d: d.find_element(By.ID, "forecast-output").text)
    expected = models["forecaster"].model.forecast([1, 2, None, 4, 5, 6, 7, 8, 9, 10], 3)
    shown = [float(v) for v in browser.find_element(By.ID, "forecast-output").text.split(", ")]
    assert shown == pytest.approx(expected, abs=0.0051)  # two decimals
