"""The web page of a server started with an API key: it asks for the key, then works as usual.
Headless Chromium, like tests/serving/test_browser.py; run with `pytest -m browser`."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from seq2seq.serving.app import ServeSettings, create_app
from seq2seq.serving.models import load_models
from tests.serving.model_dirs import build_model_dirs, serving
from tests.serving.test_browser import browser, fill  # noqa: F401 - the browser fixture

pytestmark = pytest.mark.browser

KEY = "page-key-123"


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory):
    dirs = build_model_dirs(tmp_path_factory.mktemp("browser-key"))
    models = load_models([(None, str(dirs["translator"]))], device="cpu")
    with serving(create_app(models, ServeSettings(api_key=KEY))) as url:
        yield url, models


def test_page_asks_for_the_key_then_translates(keyed_server, browser):  # noqa: F811
    url, models = keyed_server
    browser.get(url + "/")
    wait = WebDriverWait(browser, 20)
    wait.until(lambda d: d.find_element(By.ID, "key-form").is_displayed())
    assert len(Select(browser.find_element(By.ID, "model")).options) == 0
    fill(browser, "api-key", "wrong")
    browser.find_element(By.ID, "key-submit").click()
    wait.until(lambda d: "not accepted" in d.find_element(By.ID, "error").text)
    fill(browser, "api-key", KEY)
    browser.find_element(By.ID, "key-submit").click()
    wait.until(lambda d: len(Select(d.find_element(By.ID, "model")).options) == 1)
    assert not browser.find_element(By.ID, "key-form").is_displayed()
    fill(browser, "source", "red dog runs")
    fill(browser, "beam", "2")
    browser.find_element(By.ID, "translate").click()
    expected = models["translator"].model.translate(["red dog runs"], beam=2)[0]
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#heatmap tbody tr"))  # the answer has arrived
    assert browser.find_element(By.ID, "translation-output").get_attribute("textContent") == expected
    assert browser.find_element(By.ID, "error").text == ""
