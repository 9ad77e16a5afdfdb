"""The exported web page (seq2seq-export format=web) in headless Chromium beside the Python runtime
on the same machine: download size, time to the first translation, sentences per second.

    python benchmarks/web_speed.py model=RUN/model [sentences=100] [rounds=3] [precision=fp32] [beams=1,5]

The model directory is exported into benchmarks/results/web/<precision>/ and served by
`python -m http.server` on 127.0.0.1. Per round, in a new browser profile (nothing cached):
the time from asking for the page to the first translation of one sentence on the screen (cold),
then the same after a reload (warm: the model files come from the page's cache). Then the first
N sentences of Multi30k test_2016_flickr, translated on the page one at a time (the page's own
timing), and by the Python runtime (seq2seq.portable, onnxruntime) on the same exported
directory: one sentence at a time on one thread (as the page computes) and as seq2seq-translate
does (length-sorted batches, onnxruntime's threads). Medians over the rounds; "same_as_python"
is the share of the page's translations equal to the Python runtime's one-at-a-time output.
Prints a table and writes benchmarks/results/web_speed.json.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from reporting import RESULTS, report
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.chromium: the same browser set-up

from seq2seq.portable.translation import Translator  # noqa: E402
from seq2seq.text import read_lines  # noqa: E402
from seq2seq.web.export import export_web  # noqa: E402
from tests.chromium import start_chromium  # noqa: E402


def set_field(driver, element_id: str, value: str) -> None:
    driver.execute_script("document.getElementById(arguments[0]).value = arguments[1]", element_id, value)


def translate_on_page(driver, lines: list[str], beam: int) -> tuple[list[str], float]:
    set_field(driver, "source", "\n".join(lines))
    set_field(driver, "beam", str(beam))
    driver.execute_script("document.getElementById('translation-timing').textContent = ''")
    driver.find_element(By.ID, "translate").click()
    WebDriverWait(driver, 1800).until(lambda d: d.find_element(By.ID, "translation-timing").text
                                      or d.find_element(By.ID, "error").text)
    error = driver.find_element(By.ID, "error").text
    if error:
        raise SystemExit(f"the page failed: {error}")
    texts = [item.text for item in driver.find_elements(By.CSS_SELECTOR, "#translations li")]
    return texts, driver.execute_script("return window.seq2seq.lastSeconds")


def first_translation(driver, url: str, line: str, beam: int, reload: bool) -> float:
    """Seconds from asking for the page to the first translation on the screen."""
    start = time.perf_counter()
    driver.refresh() if reload else driver.get(url)
    WebDriverWait(driver, 600).until(lambda d: d.find_element(By.ID, "translate").is_enabled()
                                     or d.find_element(By.ID, "error").text)
    translate_on_page(driver, [line], beam)
    return time.perf_counter() - start


def main() -> None:
    args = dict(a.split("=", 1) for a in sys.argv[1:])
    model_dir = Path(args["model"])
    count, rounds = int(args.get("sentences", 100)), int(args.get("rounds", 3))
    precision = args.get("precision", "fp32")
    beams = [int(b) for b in args.get("beams", "1,5").split(",")]
    site = RESULTS / "web" / precision
    start = time.perf_counter()
    export_web(model_dir, site, precision=precision)
    export_seconds = time.perf_counter() - start
    document = json.loads((site / "site.json").read_text(encoding="utf-8"))
    downloaded = sum(f["bytes"] for f in document["files"]) + sum((site / p).stat().st_size for p in document["page"])

    python = Translator.load(site / "model")
    one_thread = Translator.load(site / "model", threads=1)
    data_dir = Path(args.get("data_dir", python.directory.config["data"]["data_dir"]))
    lines = read_lines(data_dir / "test_2016_flickr.de")[:count]

    port = 8000 + (hash(str(site)) % 1000)
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                               "--directory", str(site)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    timings: dict[str, list[float]] = {}
    same: dict[int, float] = {}
    try:
        for _ in range(rounds):
            driver = start_chromium()  # a new profile: nothing in its caches
            try:
                url = f"http://127.0.0.1:{port}/"
                timings.setdefault("first_translation_cold_s", []).append(
                    first_translation(driver, url, lines[0], beams[-1], reload=False))
                timings.setdefault("first_translation_warm_s", []).append(
                    first_translation(driver, url, lines[0], beams[-1], reload=True))
                for beam in beams:
                    texts, seconds = translate_on_page(driver, lines, beam)
                    timings.setdefault(f"page_beam{beam}_sent_per_s", []).append(len(lines) / seconds)
                    expected = [one_thread.translate([line], beam=beam)[0] for line in lines]
                    same[beam] = sum(a == b for a, b in zip(texts, expected)) / len(lines)
            finally:
                driver.quit()
            for beam in beams:
                start = time.perf_counter()
                for line in lines:
                    one_thread.translate([line], beam=beam)
                timings.setdefault(f"python_1thread_one_at_a_time_beam{beam}_sent_per_s", []).append(
                    len(lines) / (time.perf_counter() - start))
                start = time.perf_counter()
                python.translate(lines, beam=beam)
                timings.setdefault(f"python_batched_beam{beam}_sent_per_s", []).append(
                    len(lines) / (time.perf_counter() - start))
    finally:
        server.terminate()
        server.wait(10)

    result = {"model": str(model_dir), "precision": precision, "sentences": len(lines), "rounds": rounds,
              "export_s": round(export_seconds, 1), "download_mb": round(downloaded / 1e6, 1),
              "onnxruntime_web": document["runtime"]["version"], "browser_threads": 1,
              **{key: round(statistics.median(values), 2) for key, values in timings.items()},
              **{f"same_as_python_beam{beam}": round(share, 3) for beam, share in same.items()}}
    report(result, RESULTS / f"web_speed_{precision}.json")


if __name__ == "__main__":
    main()
