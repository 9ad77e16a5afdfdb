"""The container images as a user gets them: built from Dockerfile (PyTorch) and Dockerfile.runtime
(exported models, no torch), run with a model directory mounted, translating, refusing bad requests
with 4xx while the server goes on, and stopped by `docker stop` (exit 0).

The test runs a Docker daemon of its own (vfs storage, no bridge, no iptables: a daemon that needs
nothing of the machine but root; SEQ2SEQ_DOCKER_STORAGE=overlay2 is faster where the kernel allows
it) on a socket of its own, so it never touches a daemon of the machine. No container registry is
reachable in CI, so the base image is built from Debian's packages (.ci/container-base.sh) and
passed as BASE_IMAGE; the Dockerfiles keep python:3.11-slim as their default. Builds and containers
use the host's network (`--network host`): pip reaches the package registry as it does here, the
CPU wheel of torch comes from this machine's wheel folder, served on 127.0.0.1 for the build, and
the server listens on 127.0.0.1 alone; every request the test sends goes to 127.0.0.1.

The daemon's data (base image, layers) stays in $SEQ2SEQ_DOCKER_ROOT (~/.cache/seq2seq-docker),
so a second run reuses the base image and the cached layers. Sizes and start-up times are printed
(pytest -s) and written to benchmarks/results/container.json.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import BIN, run

ROOT = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get("SEQ2SEQ_DOCKER_ROOT", Path.home() / ".cache" / "seq2seq-docker"))
# vfs works wherever the daemon runs at all, at the price of a full copy of the file system for
# every build step and container (a cold run of this file: 6 minutes on 2 cores, 4 with overlay2).
STORAGE_DRIVER = os.environ.get("SEQ2SEQ_DOCKER_STORAGE", "vfs")
BASE_TAG = "seq2seq-base:bookworm"
RESULTS = ROOT / "benchmarks" / "results" / "container.json"
SENTENCE, EXPECTED = "red dog runs", "RUNS DOG RED"  # the reversal model's task
CONTAINER_PREFIX = "seq2seq-test-"
WHEEL_PORT = 47613


def missing_tools() -> str | None:
    for tool, package in (("docker", "docker.io"), ("dockerd", "docker.io"), ("mmdebstrap", "mmdebstrap")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install {package})"
    if os.geteuid() != 0:
        return "the test's own Docker daemon needs root"
    return None


pytestmark = [pytest.mark.slow, pytest.mark.container,
              pytest.mark.skipif(missing_tools() is not None, reason=missing_tools() or "")]


# ----------------------------------------------------------------------------- the daemon
class Docker:
    """The docker CLI, talking to the test's daemon."""

    def __init__(self, socket_path: Path) -> None:
        self.env = dict(os.environ, DOCKER_HOST=f"unix://{socket_path}")
        self.env.pop("DOCKER_CONTEXT", None)

    def __call__(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(["docker", *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"docker {' '.join(args[:3])} ... exited {result.returncode}:\n"
                                 f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result

    def remove_test_containers(self) -> None:
        names = self("ps", "-aq", "--filter", f"name=^{CONTAINER_PREFIX}", check=False).stdout.split()
        if names:
            self("rm", "-f", *names, check=False)


@pytest.fixture(scope="module")
def docker() -> Iterator[Docker]:
    DATA_ROOT.mkdir(parents=True, exist_ok=True)
    # One daemon per data folder: a second test session (another xdist worker) waits for this one.
    lock = open(DATA_ROOT.parent / f"{DATA_ROOT.name}.lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    # Short paths: a unix socket's path has at most 107 bytes, and containerd's sockets lie in exec-root.
    run_dir = Path(tempfile.mkdtemp(prefix="s2s-dockerd-", dir="/tmp"))
    socket_path = run_dir / "docker.sock"
    log = open(run_dir / "dockerd.log", "w")
    daemon = subprocess.Popen(
        ["dockerd", "--storage-driver", STORAGE_DRIVER, "--bridge=none", "--iptables=false", "--ip6tables=false",
         "--data-root", str(DATA_ROOT), "--exec-root", str(run_dir / "exec"),
         # Beside the data, not in run_dir: dockerd refuses to start on it while a daemon of a
         # killed run still holds the data.
         "--pidfile", str(DATA_ROOT.parent / f"{DATA_ROOT.name}.pid"), "--host", f"unix://{socket_path}"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    client = Docker(socket_path)
    try:
        deadline = time.monotonic() + 60
        while client("info", check=False, timeout=10).returncode != 0:
            if daemon.poll() is not None or time.monotonic() > deadline:
                tail = (run_dir / "dockerd.log").read_text()[-3000:]
                pytest.fail(f"dockerd did not start (exit {daemon.poll()}); its log ends:\n{tail}")
            time.sleep(0.5)
        client.remove_test_containers()  # left by a run that was killed
        yield client
    finally:
        with contextlib.suppress(Exception):
            client.remove_test_containers()
            # Images a rebuild left untagged, with the layers only they used: the cache stays bounded.
            client("image", "prune", "--force", check=False, timeout=300)
        daemon.terminate()
        try:
            daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:  # its group: the containerd it started goes too
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait()
        log.close()
        # dockerd leaves its network namespace mounted in exec-root
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        for mount in reversed([m for m in mounts if m.startswith(f"{run_dir}/")]):
            subprocess.run(["umount", mount], capture_output=True)
        shutil.rmtree(run_dir, ignore_errors=True)
        lock.close()


@pytest.fixture(scope="module")
def base_image(docker) -> str:
    cached = docker("image", "inspect", BASE_TAG, check=False).returncode == 0
    start = time.monotonic()
    result = subprocess.run([str(ROOT / ".ci" / "container-base.sh"), BASE_TAG], env=docker.env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"container-base.sh failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    record("base", {"image": BASE_TAG, "size_bytes": image_size(docker, BASE_TAG), "cached": cached,
                    "build_s": round(time.monotonic() - start, 1)})
    return BASE_TAG


# ----------------------------------------------------------------------------- the torch wheel
def torch_pin() -> str:
    found = re.search(r"^torch==(\S+)", (ROOT / "constraints.txt").read_text(), re.MULTILINE)
    assert found, "constraints.txt pins no torch version"
    return found.group(1)


def wheel_folders() -> list[Path]:
    """pip's find-links folders on this machine (its config files and PIP_FIND_LINKS)."""
    listing = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    values = re.findall(r"find-links='([^']*)'", listing) + [os.environ.get("PIP_FIND_LINKS", "")]
    return [Path(part) for value in values for part in value.split() if Path(part).is_dir()]


@pytest.fixture(scope="module")
def torch_wheels() -> Iterator[str]:
    """The URL of a folder holding only the local CPU wheel of the pinned torch (cp311: the Debian
    base's Python), served on 127.0.0.1 while the build runs."""
    pattern = f"torch-{torch_pin()}+cpu-cp311-cp311-*linux*_x86_64.whl"
    wheels = [wheel for folder in wheel_folders() for wheel in sorted(folder.glob(pattern))]
    if not wheels:
        pytest.skip(f"no {pattern} in pip's find-links folders: the image would get the CUDA build of torch")
    folder = Path(tempfile.mkdtemp(prefix="s2s-wheels-"))
    (folder / wheels[0].name).symlink_to(wheels[0])

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(folder))
    # A fixed port where it is free: the URL is a build argument, part of the install step's cache key.
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", WHEEL_PORT), handler)
    except OSError:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        shutil.rmtree(folder, ignore_errors=True)


# ----------------------------------------------------------------------------- building and serving
def image_size(docker: Docker, tag: str) -> int:
    return int(docker("image", "inspect", "--format", "{{.Size}}", tag).stdout)


def context_of(tmp_path: Path, dockerfile: str, paths: list[str]) -> Path:
    """A build context with the Dockerfile and `paths` alone: the checkout's .venv, outputs and caches
    are never sent to the daemon."""
    context = tmp_path / "context"
    context.mkdir()
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in [dockerfile, *paths]:
        source, target = ROOT / name, context / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=skip)
        else:
            shutil.copy2(source, target)
    return context


def build(docker: Docker, context: Path, dockerfile: str, tag: str, **build_args: str) -> dict:
    arguments = [part for name, value in build_args.items() for part in ("--build-arg", f"{name}={value}")]
    command = ["build", "--network", "host", "--file", str(context / dockerfile), *arguments]
    start = time.monotonic()
    result = docker(*command, "--tag", tag, str(context), timeout=1500)
    took = time.monotonic() - start
    # The build stage's image is untagged, so the prune at the end would drop it and the next run
    # would install everything again: a tag keeps it (all its steps are cached now: seconds).
    docker(*command, "--target", "build", "--tag", f"{tag.partition(':')[0]}:build-stage", str(context), timeout=300)
    return {"image": tag, "build_s": round(took, 1), "steps": result.stdout.count("\nStep "),
            "cached_steps": result.stdout.count("Using cache"), "size_bytes": image_size(docker, tag)}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def readable_copy(model_dir: Path, tmp_path: Path) -> Path:
    """The model, readable by the image's unprivileged user whatever the test folders' modes."""
    target = tmp_path / "model"
    shutil.copytree(model_dir, target)
    for path in [target, *target.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return target


def serve_and_probe(docker: Docker, image: str, model_dir: Path) -> tuple[dict, dict[str, str]]:
    """Run the image on `model_dir`, translate, send bad requests, stop it: the timings, and the
    Python packages installed in the image (from the running container: under vfs another
    container would cost a copy of the whole image)."""
    port, name = free_port(), f"{CONTAINER_PREFIX}{os.getpid()}-{image.partition(':')[0].rsplit('-', 1)[-1]}"
    start = time.monotonic()
    docker("run", "--detach", "--name", name, "--network", "host", "--volume", f"{model_dir}:/model:ro",
           image, "model=/model", "host=127.0.0.1", f"port={port}", timeout=300)
    running = time.monotonic()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30, trust_env=False) as client:
            answer = first_translation(docker, name, client, deadline=running + 180)
            ready = time.monotonic()
            assert answer["translations"][0]["text"] == EXPECTED, answer
            check_bad_requests(client)
        listing = docker("exec", name, "pip", "list", "--format", "freeze", "--disable-pip-version-check").stdout
        stopping = time.monotonic()
        docker("stop", "--time", "30", name, timeout=60)
        stopped = time.monotonic()
        state = json.loads(docker("inspect", "--format", "{{json .State}}", name).stdout)
        printed = docker("logs", name)
        logs = printed.stdout + printed.stderr
        assert state["ExitCode"] == 0, f"the server exited {state['ExitCode']} on docker stop:\n{logs[-3000:]}"
        assert "Traceback" not in logs, logs[-3000:]
    finally:
        docker("rm", "--force", name, check=False)
    timings = {"run_to_first_translation_s": round(ready - start, 2),
               "docker_run_s": round(running - start, 2),  # creating the container: vfs copies the image
               "started_to_first_translation_s": round(ready - running, 2),
               "stop_s": round(stopped - stopping, 2)}
    packages = dict(line.split("==", 1) for line in listing.splitlines() if "==" in line)
    return timings, {name.lower(): version for name, version in packages.items()}


def first_translation(docker: Docker, name: str, client: httpx.Client, deadline: float) -> dict:
    while True:
        with contextlib.suppress(httpx.TransportError):
            answer = client.post("/translate", json={"text": [SENTENCE]})
            if answer.status_code == 200:
                return answer.json()
            raise AssertionError(f"the first translation got {answer.status_code}: {answer.text}")
        status = docker("inspect", "--format", "{{.State.Status}}", name).stdout.strip()
        if status != "running" or time.monotonic() > deadline:
            logs = docker("logs", name, check=False)
            raise AssertionError(f"the server did not answer ({status}):\n{logs.stdout[-2000:]}{logs.stderr[-3000:]}")
        time.sleep(0.2)


def check_bad_requests(client: httpx.Client) -> None:
    as_json = {"content-type": "application/json"}
    bad = {
        "malformed JSON": (400, client.post("/translate", content=b'{"text": ["red', headers=as_json)),
        "unknown field": (422, client.post("/translate", json={"text": [SENTENCE], "bem": 5})),
        "wrong type": (422, client.post("/translate", json={"text": SENTENCE})),
        "unknown model": (404, client.post("/translate", json={"text": [SENTENCE], "model": "nope"})),
        # over max_body_bytes (1 MiB by default): refused before it is parsed
        "too large body": (413, client.post("/translate", json={"text": ["red " * 300_000]})),
    }
    for what, (status, answer) in bad.items():
        assert answer.status_code == status, (what, answer.status_code, answer.text)
        assert answer.json()["error"], (what, answer.text)
        assert client.get("/health").status_code == 200, f"the server stopped answering after the {what}"
    again = client.post("/translate", json={"text": [SENTENCE, "cat"]})
    assert again.status_code == 200 and [t["text"] for t in again.json()["translations"]] == [EXPECTED, "CAT"]


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def record(key: str, values: dict) -> None:
    print(f"\ncontainer: {key}: {json.dumps(values)}", flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[key] = values
    results["machine"] = {"cpu": cpu_name(), "cores": os.cpu_count(), "storage_driver": STORAGE_DRIVER}
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


# ----------------------------------------------------------------------------- the tests
def test_pytorch_image_serves_a_model_directory(docker, base_image, torch_wheels, trained_reversal, tmp_path):
    context = context_of(tmp_path, "Dockerfile", ["constraints.txt", "pyproject.toml", "README.md", "seq2seq"])
    built = build(docker, context, "Dockerfile", "seq2seq-serve:test", BASE_IMAGE=base_image,
                  TORCH_FIND_LINKS=torch_wheels)
    # The CUDA build of torch makes an image of more than 5 GB: the local CPU wheel was not used.
    assert built["size_bytes"] < 2.5e9, f"the image is {built['size_bytes'] / 1e9:.1f} GB: not the CPU build of torch"
    timings, packages = serve_and_probe(docker, "seq2seq-serve:test",
                                        readable_copy(trained_reversal / "run" / "model", tmp_path))
    assert packages["torch"] == f"{torch_pin()}+cpu", packages.get("torch")
    assert not [name for name in packages if name.startswith("nvidia-")], packages
    record("pytorch", built | timings)


def test_runtime_image_serves_an_exported_model(docker, base_image, trained_reversal, tmp_path):
    if not (ROOT / "runtime" / "pyproject.toml").exists():
        pytest.skip("runtime/pyproject.toml is missing: no torch-free distribution to build")
    if not (BIN / "seq2seq-export").exists():
        pytest.skip("seq2seq-export is not installed in this environment (make install)")
    exported = tmp_path / "exported"
    run(["seq2seq-export", f"model={trained_reversal / 'run' / 'model'}", "format=onnx", f"output={exported}"],
        cwd=tmp_path)
    context = context_of(tmp_path, "Dockerfile.runtime", ["runtime", "seq2seq"])
    built = build(docker, context, "Dockerfile.runtime", "seq2seq-runtime:test", BASE_IMAGE=base_image)
    timings, packages = serve_and_probe(docker, "seq2seq-runtime:test", readable_copy(exported, tmp_path))
    heavy = sorted(set(packages) & {"torch", "lightning", "pytorch-lightning", "hydra-core", "omegaconf", "matplotlib"})
    assert not heavy, f"the runtime image has {heavy}"
    assert "onnxruntime" in packages, packages
    record("runtime", built | timings)
