"""seq2seq-serve: every endpoint, every bad input, batching, streaming and liveness, in process;
then the real command on a real port."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from seq2seq import Classifier, Generator, Translator
from seq2seq.errors import UserError
from seq2seq.serving.app import ServeSettings, create_app
from seq2seq.serving.batching import Batcher
from seq2seq.serving.models import ServedModel, load_models, parse_model_argument
from tests.serving.model_dirs import SlowGenerator, build_model_dirs, serving

SENTENCES = ["red dog runs", "blue cat sits on the big hill", "sun", "small bird and green fish", "moon road"]


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> dict[str, Path]:
    return build_model_dirs(tmp_path_factory.mktemp("served"))


@pytest.fixture(scope="module")
def served(model_dirs) -> dict[str, ServedModel]:
    return load_models([(None, str(path)) for path in model_dirs.values()], device="cpu")


class FakeForecaster:
    """The interface seq2seq.Forecaster will have: forecast(values, horizon) -> list of floats."""

    def forecast(self, values: list, horizon: int) -> list[float]:
        known = [v for v in values if v is not None]
        if horizon == 13:
            raise UserError("horizon=13 is longer than the model's 12 weeks")
        return [known[-1] + step for step in range(1, horizon + 1)]


def make_app(served: dict[str, ServedModel], **settings):
    models = {name: model for name, model in served.items() if model.task != "forecast"}
    models["co2"] = ServedModel("co2", "forecast", FakeForecaster(), "fake", {"precision": "fp32"})
    return create_app(models, ServeSettings(**settings))


@pytest.fixture(scope="module")
def client(served):
    with TestClient(make_app(served, max_texts=8, max_text_chars=200, max_beam=6, max_generate_chars=300)) as c:
        yield c


# ----------------------------------------------------------------------------- endpoints
def test_health_models_page_and_openapi(client):
    assert client.get("/health").json()["status"] == "ok"
    models = {m["name"]: m for m in client.get("/models").json()["models"]}
    assert {name: m["task"] for name, m in models.items()} == {
        "translator": "translation", "lm": "language_model", "classifier": "classification", "co2": "forecast"}
    assert models["translator"]["languages"] == {"source": "src", "target": "tgt"}
    assert models["translator"]["parameters"] > 1000 and models["translator"]["precision"] == "fp32"
    assert models["classifier"]["labels"] == ["negative", "positive"]
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert '<script src="/static/app.js">' in page.text
    assert "generate/stream" in client.get("/static/app.js").text
    schema = client.get("/openapi.json").json()
    assert {"/translate", "/generate", "/generate/stream", "/classify", "/forecast", "/health",
            "/models"} <= set(schema["paths"])
    assert client.get("/docs").status_code == 200


def test_translate_matches_the_python_api(client, served):
    translator: Translator = served["translator"].model
    answer = client.post("/translate", json={"model": "translator", "text": SENTENCES, "beam": 3, "nbest": 2})
    assert answer.status_code == 200
    results = answer.json()["translations"]
    expected = translator.translate(SENTENCES, beam=3, nbest=2)
    assert [[h["text"] for h in r["nbest"]] for r in results] == [[h.text for h in hyps] for hyps in expected]
    assert [r["text"] for r in results] == [hyps[0].text for hyps in expected]
    assert all(r["nbest"][0]["score"] >= r["nbest"][1]["score"] for r in results)


def test_translate_returns_attention_matrices(client, served):
    result = client.post("/translate", json={"text": ["red dog runs"], "return_attention": True,
                                             "beam": 1}).json()["translations"][0]
    attention = result["attention"]
    assert attention["source_pieces"] == served["translator"].model.src_tokenizer.encode_pieces("red dog runs")
    assert attention["target_pieces"][-1] == "</s>"
    assert len(attention["weights"]) == len(attention["target_pieces"])
    for row in attention["weights"]:
        assert len(row) == len(attention["source_pieces"])
        assert sum(row) == pytest.approx(1.0, abs=1e-2)


def test_seeded_sampling_is_reproducible(client):
    body = {"text": ["red dog", "blue cat"], "sampling": True, "seed": 7, "nbest": 3, "temperature": 1.5}
    first = client.post("/translate", json=body).json()
    assert client.post("/translate", json=body).json() == first
    assert len(first["translations"][0]["nbest"]) == 3


def test_generate_matches_the_python_api_and_the_stream_sends_the_same_text(client, served):
    generator: Generator = served["lm"].model
    body = {"prompt": "line 3", "max_chars": 80, "seed": 5, "temperature": 0.9}
    answer = client.post("/generate", json=body).json()
    assert answer["text"] == generator.generate("line 3", 80, seed=5, temperature=0.9)
    assert len(answer["text"]) == 80
    several = client.post("/generate", json=body | {"num_samples": 3}).json()["texts"]
    assert len(several) == 3 and several[0] != several[1]

    with client.stream("POST", "/generate/stream", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = response.read().decode()
    events = [block for block in raw.split("\n\n") if block]
    texts = [json.loads(e.removeprefix("data: "))["text"] for e in events if e.startswith("data: ")]
    assert "".join(texts) == answer["text"]
    assert events[-1] == 'event: end\ndata: {"chars": 80}'


def test_stream_with_a_stop_string_ends_cleanly(client, served):
    body = {"prompt": "line", "max_chars": 200, "greedy": True, "stop": ["e"]}
    expected = served["lm"].model.generate("line", 200, greedy=True, stop=["e"])
    with client.stream("POST", "/generate/stream", json=body) as response:
        raw = response.read().decode()
    texts = [json.loads(line.removeprefix("data: ")).get("text", "") for line in raw.splitlines()
             if line.startswith("data: ")]
    assert "".join(texts) == expected and "e" not in expected
    assert "event: end" in raw


def test_classify_matches_the_python_api(client, served):
    classifier: Classifier = served["classifier"].model
    texts = ["Red dog runs", "blue cat", ""]
    predictions = client.post("/classify", json={"text": texts}).json()["predictions"]
    expected = classifier.classify(texts)
    for got, want in zip(predictions[:2], expected[:2]):
        assert got["label"] == want.label
        assert got["probabilities"] == pytest.approx(want.probabilities, abs=1e-5)
        assert sum(got["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert predictions[2] == {"label": None, "probability": None, "probabilities": {}}


def test_forecast_calls_the_forecaster_interface(client):
    answer = client.post("/forecast", json={"values": [1.0, None, 3.5], "horizon": 3})
    assert answer.status_code == 200
    assert answer.json()["forecast"] == [4.5, 5.5, 6.5]


def test_forecast_with_a_forecaster_directory_matches_the_python_api(served):
    forecaster = served["forecaster"].model
    history = [1.0, 2.0, None, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
    with TestClient(create_app({"forecaster": served["forecaster"]})) as c:
        answer = c.post("/forecast", json={"values": history, "horizon": 6})
        assert answer.status_code == 200
        assert answer.json()["forecast"] == pytest.approx(forecaster.forecast(history, 6), abs=1e-6)
        assert c.get("/models").json()["models"][0]["horizon"] == 4
        short = c.post("/forecast", json={"values": [1.0, 2.0], "horizon": 2})  # shorter than the window
        assert short.status_code == 422 and short.json()["field"] == "values"


# ----------------------------------------------------------------------------- bad input
BAD_INPUT = [
    # route, body (dict = JSON, bytes = raw), status, field
    ("/translate", b"{not json", 400, "body"),
    ("/translate", b"[1, 2]", 400, "body"),
    ("/translate", b"", 400, "body"),
    ("/translate", {"text": "one sentence"}, 422, "text"),
    ("/translate", {"text": []}, 422, "text"),
    ("/translate", {"text": ["a", 5]}, 422, "text[1]"),
    ("/translate", {"text": ["a"] * 9}, 422, "text"),
    ("/translate", {"text": ["ok", "x" * 201]}, 422, "text[1]"),
    ("/translate", {"text": ["a"], "model": "nope"}, 404, "model"),
    ("/translate", {"text": ["a"], "model": "lm"}, 422, "model"),
    ("/translate", {"text": ["a"], "model": 3}, 422, "model"),
    ("/translate", {"text": ["a"], "beam": 0}, 422, "beam"),
    ("/translate", {"text": ["a"], "beam": "5"}, 422, "beam"),
    ("/translate", {"text": ["a"], "beam": 7}, 422, "beam"),
    ("/translate", {"text": ["a"], "beam": 2, "nbest": 3}, 422, "nbest"),
    ("/translate", {"text": ["a"], "top_p": 1.5}, 422, "top_p"),
    ("/translate", {"text": ["a"], "temperature": 0}, 422, "temperature"),
    ("/translate", {"text": ["a"], "max_len_ratio": -1}, 422, "max_len_ratio"),
    ("/translate", {"text": ["a"], "return_attention": "yes"}, 422, "return_attention"),
    ("/translate", {"text": ["a"], "beams": 4}, 422, "beams"),
    ("/generate", {"prompt": 5}, 422, "prompt"),
    ("/generate", {"prompt": "x" * 201}, 422, "prompt"),
    ("/generate", {"max_chars": -1}, 422, "max_chars"),
    ("/generate", {"max_chars": 301}, 422, "max_chars"),
    ("/generate", {"num_samples": 9}, 422, "num_samples"),
    ("/generate", {"top_k": -2}, 422, "top_k"),
    ("/generate", {"stop": "e"}, 422, "stop"),
    ("/generate", {"model": "translator"}, 422, "model"),
    ("/generate/stream", {"temperature": -1}, 422, "temperature"),
    ("/generate/stream", {"num_samples": 2}, 422, "num_samples"),
    ("/generate/stream", b"{", 400, "body"),
    ("/classify", {"text": []}, 422, "text"),
    ("/classify", {"text": [None]}, 422, "text[0]"),
    ("/classify", {"texts": ["a"]}, 422, "text"),
    ("/forecast", {"values": [], "horizon": 2}, 422, "values"),
    ("/forecast", {"values": [None, None], "horizon": 2}, 422, "values"),
    ("/forecast", {"values": [1, "a"], "horizon": 2}, 422, "values[1]"),
    ("/forecast", {"values": [1, 2], "horizon": 0}, 422, "horizon"),
    ("/forecast", {"values": [1, 2], "horizon": 1000}, 422, "horizon"),
    ("/forecast", {"values": [1, 2], "horizon": 13}, 422, "horizon"),  # the model's own UserError
    ("/forecast", {"values": [1, 2]}, 422, "horizon"),
]


@pytest.mark.parametrize("route, body, status, field", BAD_INPUT)
def test_bad_input_gets_a_4xx_naming_the_field_and_the_server_goes_on(client, route, body, status, field):
    if isinstance(body, bytes):
        answer = client.post(route, content=body, headers={"content-type": "application/json"})
    else:
        answer = client.post(route, json=body)
    assert answer.status_code == status, answer.text
    error = answer.json()
    assert error["field"] == field, error
    assert isinstance(error["error"], str) and error["error"] and "\n" not in error["error"]
    assert client.post("/translate", json={"text": ["red dog"]}).status_code == 200


def test_an_unexpected_model_failure_is_a_json_500_and_the_next_request_works(served):
    class Flaky:
        def __init__(self, inner):
            self.inner, self.failed = inner, False

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def translate(self, *args, **kwargs):
            if not self.failed:
                self.failed = True
                raise RuntimeError("out of memory")
            return self.inner.translate(*args, **kwargs)

    model = ServedModel("flaky", "translation", Flaky(served["translator"].model))
    with TestClient(create_app({"flaky": model}), raise_server_exceptions=False) as c:
        answer = c.post("/translate", json={"text": ["red dog"]})
        assert answer.status_code == 500 and "out of memory" in answer.json()["error"]
        assert c.post("/translate", json={"text": ["red dog"]}).status_code == 200


def test_model_name_is_needed_only_when_a_task_has_several(served):
    translator = served["translator"].model
    models = {"a": ServedModel("a", "translation", translator), "b": ServedModel("b", "translation", translator)}
    with TestClient(create_app(models)) as c:
        answer = c.post("/translate", json={"text": ["red"]})
        assert answer.status_code == 422 and answer.json()["field"] == "model" and "a, b" in answer.json()["error"]
        assert c.post("/translate", json={"text": ["red"], "model": "b"}).status_code == 200
        assert c.post("/generate", json={}).status_code == 404


# ----------------------------------------------------------------------------- batching
class Recording:
    """A translator whose calls are counted (and optionally slowed down)."""

    def __init__(self, inner, delay: float = 0.0) -> None:
        self.inner, self.delay = inner, delay
        self.calls: list[int] = []
        self.lines: list[list[str]] = []
        self.started = threading.Event()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def translate(self, lines, **options):
        self.calls.append(len(lines))
        self.lines.append(list(lines))
        self.started.set()
        time.sleep(self.delay)
        return self.inner.translate(lines, **options)


async def concurrent_requests(app, bodies: list[dict]) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        return await asyncio.gather(*(c.post("/translate", json=body) for body in bodies))


@pytest.mark.parametrize("batching", [True, False])
def test_concurrent_requests_share_decoding_batches(served, batching):
    recording = Recording(served["translator"].model)
    app = create_app({"t": ServedModel("t", "translation", recording)},
                     ServeSettings(batching=batching, batch_wait_ms=200))
    answers = asyncio.run(concurrent_requests(app, [{"text": [s], "beam": 2} for s in SENTENCES * 2]))
    assert [a.status_code for a in answers] == [200] * 10
    expected = served["translator"].model.translate(SENTENCES * 2, beam=2)
    assert [a.json()["translations"][0]["text"] for a in answers] == expected
    assert sum(recording.calls) == 10
    if batching:
        assert len(recording.calls) <= 2 and max(recording.calls) >= 5
    else:
        assert recording.calls == [1] * 10


def test_only_requests_with_the_same_options_share_a_batch(served):
    recording = Recording(served["translator"].model)
    app = create_app({"t": ServedModel("t", "translation", recording)}, ServeSettings(batch_wait_ms=200))
    bodies = [{"text": [s], "beam": 1 + i % 2} for i, s in enumerate(SENTENCES * 2)]
    answers = asyncio.run(concurrent_requests(app, bodies))
    assert all(a.status_code == 200 for a in answers)
    assert sorted(recording.calls) == [5, 5]


def test_the_token_budget_bounds_a_shared_batch(served):
    recording = Recording(served["translator"].model)
    tokenizer = served["translator"].model.src_tokenizer
    app = create_app({"t": ServedModel("t", "translation", recording)},
                     ServeSettings(batch_wait_ms=200, batch_tokens=8))
    answers = asyncio.run(concurrent_requests(app, [{"text": [s]} for s in SENTENCES * 2]))
    assert all(a.status_code == 200 for a in answers)
    assert sum(len(lines) for lines in recording.lines) == 10
    for lines in recording.lines:
        cost = sum(max(len(ids), 1) for ids in tokenizer.encode(lines))
        assert cost <= 8 or len(lines) == 1  # a request over the budget goes alone
    assert any(len(lines) > 1 for lines in recording.lines)


def test_batcher_hands_an_error_to_every_job_of_the_call_and_goes_on():
    calls = []

    def run(key, items):
        calls.append(list(items))
        if "boom" in items:
            raise ValueError("boom")
        return [item.upper() for item in items]

    batcher = Batcher(run, budget=100, wait_s=0.1)
    try:
        first, second = batcher.submit("k", ["a", "boom"], 2), batcher.submit("k", ["b"], 1)
        with pytest.raises(ValueError):
            first.result(5)
        with pytest.raises(ValueError):
            second.result(5)
        assert batcher.submit("k", ["c", "d"], 2).result(5) == ["C", "D"]
        alone = [batcher.submit("k", [x], 1, alone=True) for x in "xyz"]
        assert [f.result(5) for f in alone] == [["X"], ["Y"], ["Z"]]
        assert calls[-3:] == [["x"], ["y"], ["z"]]
    finally:
        batcher.close()


def test_health_answers_while_a_long_request_runs(served):
    slow = Recording(served["translator"].model, delay=1.5)
    app = create_app({"t": ServedModel("t", "translation", slow)})

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            long = asyncio.create_task(c.post("/translate", json={"text": ["red dog"]}))
            while not slow.started.is_set():
                await asyncio.sleep(0.01)
            began = time.monotonic()
            health = await c.get("/health")
            answered_in = time.monotonic() - began
            assert not long.done()
            return health, answered_in, await long

    health, answered_in, long = asyncio.run(scenario())
    assert health.status_code == 200 and answered_in < 1.0
    assert long.status_code == 200


# ----------------------------------------------------------------------------- a real socket
@pytest.fixture
def live_server(served):
    app = create_app({"lm": ServedModel("lm", "language_model", SlowGenerator(served["lm"].model))})
    with serving(app) as url:
        yield app, url


def test_stream_stops_generating_when_the_client_goes_away(live_server):
    app, url = live_server
    counts = app.state.server.streams
    with httpx.Client(base_url=url, timeout=10) as c:
        with c.stream("POST", "/generate/stream", json={"prompt": "line", "max_chars": 4000}) as response:
            assert response.status_code == 200
            received = ""
            for line in response.iter_lines():
                if line.startswith("data: "):
                    received += json.loads(line.removeprefix("data: "))["text"]
                if len(received) >= 20:
                    break  # leaving the block closes the connection
        deadline = time.monotonic() + 10
        while counts["finished"] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert counts["stopped"] == 1 and counts["finished"] == 1
        assert counts["steps"] < 1000  # 4,000 characters would take 20 s; it stopped after a few
        assert c.get("/health").status_code == 200


# ----------------------------------------------------------------------------- the command
def test_model_argument_forms():
    assert parse_model_argument("a/model") == [(None, "a/model")]
    assert parse_model_argument(["a", "b"]) == [(None, "a"), (None, "b")]
    assert parse_model_argument({"x": "a"}) == [("x", "a")]
    with pytest.raises(UserError, match="model= is required"):
        parse_model_argument(None)


def test_loading_names_models_after_their_run_and_refuses_bad_directories(model_dirs, tmp_path):
    run = tmp_path / "de_en" / "model"
    run.parent.mkdir()
    os.symlink(model_dirs["translator"], run)
    loaded = load_models([(None, str(run)), (None, str(run)), ("mine", str(model_dirs["lm"]))])
    assert list(loaded) == ["de_en", "de_en-2", "mine"]
    with pytest.raises(UserError, match="model directory not found"):
        load_models([(None, str(tmp_path / "missing"))])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no model.json; point model= at"):
        load_models([(None, str(tmp_path / "empty"))])


def serve_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "seq2seq.cli.serve", *args]


def run_serve_in_process(args: list[str], capsys) -> tuple[int, str]:
    """The command's config and error handling without a new process (a torch import is slow)."""
    from hydra import compose, initialize_config_dir

    from seq2seq.cli.serve import serve
    from seq2seq.config import APPS_CONF_DIR

    with initialize_config_dir(config_dir=APPS_CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="serve", overrides=args)
    with pytest.raises(SystemExit) as exit_info:
        serve(cfg)
    return exit_info.value.code, capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    ([], "error: model= is required"),
    (["model=/nonexistent/model"], "error: model directory not found: /nonexistent/model"),
    (["model=.", "batch_tokens=0"], "error: batch_tokens=0 must be positive"),
    (["model=.", "port=70000"], "error: port=70000 must be between 0 and 65535"),
])
def test_the_command_refuses_bad_arguments_in_one_line(args, message, capsys):
    code, err = run_serve_in_process(args, capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith(message), err


def test_the_command_says_when_the_port_is_taken(model_dirs, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, err = run_serve_in_process([f"model={model_dirs['translator']}", f"port={port}"], capsys)
    assert code == 2
    assert err.strip().splitlines() == [f"error: cannot listen on 127.0.0.1:{port} (Address already in use)"]


def test_the_command_serves_models_on_a_port_and_stops_on_ctrl_c(model_dirs, tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    process = subprocess.Popen(serve_command(f"model=[{model_dirs['translator']},{model_dirs['classifier']}]",
                                             f"port={port}", "log_level=warning"),
                               cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None and time.monotonic() < deadline, process.stdout.read()
                time.sleep(0.2)
        assert health.json()["models"] == 2
        answer = httpx.post(f"http://127.0.0.1:{port}/translate", json={"text": ["red dog"]}, timeout=30)
        assert answer.status_code == 200 and answer.json()["model"] == "translator"
        labels = httpx.post(f"http://127.0.0.1:{port}/classify", json={"text": ["red dog"]}, timeout=30)
        assert labels.json()["predictions"][0]["label"] in ("negative", "positive")
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
    assert "serving translator (translation)" in output and "serving classifier (classification)" in output
    assert process.returncode == 0


@pytest.mark.slow
def test_load_benchmark_runs_both_modes_and_writes_its_figures(model_dirs, tmp_path):
    sentences = tmp_path / "sentences.txt"
    sentences.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    out = tmp_path / "load.json"
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "serve_load.py"
    result = subprocess.run([sys.executable, str(script), "--model", str(model_dirs["translator"]),
                             "--sentences", str(sentences), "--requests", "40", "--clients", "4",
                             "--time-limit", "120", "--out", str(out)],
                            capture_output=True, text=True, timeout=600, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads(out.read_text())
    assert [r["batching"] for r in report["results"]] == [True, False]
    for mode in report["results"]:
        assert mode["ok"] == 40 and mode["errors"] == 0 and mode["complete"]
        assert mode["req_per_s"] > 0 and mode["p50_ms"] <= mode["p95_ms"] <= mode["p99_ms"]
        assert mode["server_peak_rss_mib"] > 50
    assert report["speedup"] > 0 and report["cpu"]
    assert "batching gives" in result.stdout
