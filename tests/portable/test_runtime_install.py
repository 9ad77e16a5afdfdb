"""The runtime as a user installs it: the seq2seq-runtime wheel (runtime/pyproject.toml) in a fresh
virtualenv with its dependencies from the package index and no torch, translating and serving an
exported model. Slow: the dependencies (onnxruntime, numpy, sacrebleu, FastAPI, ...) are installed."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from seq2seq.portable import load
from tests.helpers import run_in_process
from tests.test_wheel import ROOT, checkout_files, plain_env

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runtime_env(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("runtime")
    source = work / "source"
    for name in checkout_files():
        target = source / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if not (ROOT / name).is_symlink():
            shutil.copy2(ROOT / name, target)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(work / "dist"),
                    str(source / "runtime")], check=True, capture_output=True, env=plain_env())
    wheel = next((work / "dist").glob("seq2seq_runtime-*.whl"))
    env_dir = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True)
    subprocess.run([str(env_dir / "bin" / "python"), "-m", "pip", "install", "--quiet", f"{wheel}[serve]"],
                   check=True, capture_output=True, env=plain_env(), timeout=900)
    return env_dir


@pytest.fixture(scope="module")
def exported(trained_reversal, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("export") / "reversal"
    result = run_in_process(["seq2seq-export", f"model={trained_reversal / 'run' / 'model'}", f"output={output}"],
                            cwd=output.parent)
    assert result.returncode == 0, result.stderr
    return output


def test_the_runtime_installs_without_torch_and_translates(runtime_env, exported, trained_reversal, tmp_path):
    python = str(runtime_env / "bin" / "python")
    missing = subprocess.run([python, "-c", "import torch"], capture_output=True, text=True, env=plain_env())
    assert missing.returncode != 0 and "No module named 'torch'" in missing.stderr
    for absent in ("lightning", "hydra", "omegaconf"):
        assert subprocess.run([python, "-c", f"import {absent}"], capture_output=True, env=plain_env()).returncode
    sources = (trained_reversal / "corpus" / "test.src").read_text().splitlines()[:20]
    result = subprocess.run([str(runtime_env / "bin" / "seq2seq-translate"), f"model={exported}", "beam=3"],
                            input="\n".join(sources) + "\n", capture_output=True, text=True, cwd=tmp_path,
                            env=plain_env(), timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == load(exported).translate(sources, beam=3)
    # A PyTorch model directory: one line naming the full install.
    refused = subprocess.run([str(runtime_env / "bin" / "seq2seq-translate"),
                              f"model={trained_reversal / 'run' / 'model'}"], input="a\n", capture_output=True,
                             text=True, cwd=tmp_path, env=plain_env(), timeout=300)
    assert refused.returncode == 2 and "needs the full install" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_runtime_serves_an_exported_model(runtime_env, exported, tmp_path):
    port = free_port()
    server = subprocess.Popen([str(runtime_env / "bin" / "seq2seq-serve"), f"model={exported}", f"port={port}"],
                              cwd=tmp_path, env=plain_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
                    assert answer.status == 200
                break
            except OSError:
                assert server.poll() is None, server.stdout.read()
                assert time.monotonic() < deadline, "the server did not answer in 120 s"
                time.sleep(0.3)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/translate", method="POST",
                                         data=json.dumps({"text": ["red dog runs"], "beam": 2}).encode(),
                                         headers={"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            body = json.loads(answer.read())
        assert body["translations"][0]["text"] == load(exported).translate(["red dog runs"], beam=2)[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/models", timeout=10) as answer:
            assert json.loads(answer.read())["models"][0]["runtime"] == "onnxruntime"
    finally:
        server.terminate()
        assert server.wait(timeout=60) == 0
