"""Load benchmark of seq2seq-serve: concurrent single-sentence /translate requests on loopback.

    python benchmarks/serve_load.py --model outputs/bleu-gate/model --requests 1000 --clients 32

For each mode (batching on, then off) it starts the real command (`python -m seq2seq.cli.serve`)
on a free 127.0.0.1 port, sends `--requests` requests from `--clients` concurrent clients (source
sentences from Multi30k's test_2016_flickr.de, or --sentences FILE), and measures requests/s,
p50/p95/p99 latency, errors and the server's peak RSS (VmHWM). Every loop is bounded: at most
`--requests` requests and `--time-limit` seconds a mode; traffic goes to 127.0.0.1 only.
Prints a table and writes JSON (--out).

    python benchmarks/serve_load.py --model ... --modes overload --overload 10 --overload-seconds 15

Overload mode (batching on) first measures the server's capacity the same way (closed loop,
`--requests` requests from `--clients` clients), then sends requests open-loop at `--overload`
times that rate for `--overload-seconds` (at most `--overload-max-requests`, over at most
`--overload-connections` connections) while a probe in a process of its own asks /health every
100 ms. It reports
answered / 503 / 504 / other, the latency percentiles of the answered ones (from sending; the wait
for a free client connection is reported apart), how long the 503s took, the server's peak RSS and
the /health latencies. Both loops are bounded in
count and time and end by themselves; traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

HOST = "127.0.0.1"  # loopback only, never another address


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def peak_rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[index]


def start_server(model: str, port: int, batching: bool, extra: list[str]) -> subprocess.Popen:
    command = [sys.executable, "-m", "seq2seq.cli.serve", f"model={model}", f"host={HOST}", f"port={port}",
               f"batching={'true' if batching else 'false'}", "log_level=warning", *extra]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=dict(os.environ, PYTHONWARNINGS="ignore"))
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited {process.returncode}:\n{process.stdout.read()}")
        try:
            if httpx.get(f"http://{HOST}:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.3)
    process.kill()
    raise SystemExit("the server did not answer /health within 180 s")


async def load(url: str, sentences: list[str], requests: int, clients: int, time_limit: float,
               options: dict) -> dict:
    latencies: list[float] = []
    errors: dict[str, int] = {}
    sent = 0
    deadline = time.monotonic() + time_limit

    async def client(c: httpx.AsyncClient) -> None:
        nonlocal sent
        while sent < requests and time.monotonic() < deadline:
            sentence = sentences[sent % len(sentences)]
            sent += 1
            began = time.perf_counter()
            try:
                answer = await c.post("/translate", json={"text": [sentence], **options})
                if answer.status_code == 200:
                    latencies.append(time.perf_counter() - began)
                else:
                    errors[str(answer.status_code)] = errors.get(str(answer.status_code), 0) + 1
            except httpx.HTTPError as error:
                errors[type(error).__name__] = errors.get(type(error).__name__, 0) + 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    began = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=max(60.0, time_limit), limits=limits) as c:
        await asyncio.gather(*(client(c) for _ in range(clients)))
    elapsed = time.perf_counter() - began
    latencies.sort()
    return {"requests": sent, "ok": len(latencies), "errors": sum(errors.values()), "error_kinds": errors,
            "seconds": round(elapsed, 2), "req_per_s": round(len(latencies) / elapsed, 2),
            "p50_ms": round(1000 * percentile(latencies, 50), 1), "p95_ms": round(1000 * percentile(latencies, 95), 1),
            "p99_ms": round(1000 * percentile(latencies, 99), 1),
            "complete": sent >= requests and time.monotonic() < deadline}


HEALTH_PROBE = """
import http.client, json, sys, threading, time
host, port = sys.argv[1], int(sys.argv[2])
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
times, failures = [], 0
connection = http.client.HTTPConnection(host, port, timeout=10)
while not stop.is_set():
    began = time.perf_counter()
    try:
        connection.request("GET", "/health")
        answer = connection.getresponse()
        answer.read()
        ok = answer.status == 200
    except (OSError, http.client.HTTPException):
        ok = False
        connection.close()
        connection = http.client.HTTPConnection(host, port, timeout=10)
    if ok:
        times.append(time.perf_counter() - began)
    else:
        failures += 1
    stop.wait(0.1)
print(json.dumps({"times": times, "failures": failures}))
"""


class HealthProbe:
    """GET /health every 100 ms from a process of its own, on its own connection, until stopped.

    In the flood's own event loop the probe would time the client's backlog too (at 10x the
    client is as busy as the server); in its own process it times the server's answer."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.process = subprocess.Popen([sys.executable, "-c", HEALTH_PROBE, host, port], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)

    def stop(self) -> tuple[list[float], int]:
        out, _ = self.process.communicate("stop\n", timeout=60)
        found = json.loads(out)
        return sorted(found["times"]), found["failures"]


async def overload(url: str, sentences: list[str], rate: float, seconds: float, max_requests: int,
                   connections: int, options: dict) -> dict:
    """Open loop: a request every 1/rate s whatever the answers, for `seconds` or `max_requests`."""
    statuses: dict[str, int] = {}
    latencies: list[float] = []  # answered ones, from sending (a connection was free) to the answer
    client_waits: list[float] = []  # from the moment a request was due until a connection was free
    refusals: dict[str, list[float]] = {}  # 503 and 504 answers: how long they took
    total = min(max_requests, max(1, int(rate * seconds)))

    # Requests due while every connection is busy wait here, not in httpx's pool: its queue of
    # waiting requests costs the client time quadratic in their number (thousands at 10x).
    free_connections = asyncio.Semaphore(connections)

    async def one(c: httpx.AsyncClient, index: int, due: float) -> None:
        async with free_connections:
            sent = time.perf_counter()
            client_waits.append(sent - due)
            try:
                answer = await c.post("/translate", json={"text": [sentences[index % len(sentences)]], **options})
                kind = str(answer.status_code)
                if answer.status_code == 200:
                    latencies.append(time.perf_counter() - sent)
                elif answer.status_code in (503, 504):
                    refusals.setdefault(kind, []).append(time.perf_counter() - sent)
            except httpx.HTTPError as error:
                kind = type(error).__name__
        statuses[kind] = statuses.get(kind, 0) + 1

    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    probe = HealthProbe(url)
    began = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=max(60.0, 4 * seconds), limits=limits) as c:
        tasks = []
        for index in range(total):
            due = began + index / rate
            pause = due - time.perf_counter()
            if pause > 0:
                await asyncio.sleep(pause)
            tasks.append(asyncio.create_task(one(c, index, due)))
        sending = time.perf_counter() - began
        await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - began
    health, health_failures = probe.stop()
    latencies.sort()
    client_waits.sort()
    rejected_in = sorted(refusals.get("503", []))
    other = sum(n for kind, n in statuses.items() if kind not in ("200", "503", "504"))
    return {"offered_req_per_s": round(rate, 1), "requests": total, "sending_s": round(sending, 2),
            "seconds": round(elapsed, 2), "answered": statuses.get("200", 0), "rejected_503": statuses.get("503", 0),
            "timed_out_504": statuses.get("504", 0), "other": other, "statuses": statuses,
            "answered_per_s": round(statuses.get("200", 0) / elapsed, 2),
            "p50_ms": round(1000 * percentile(latencies, 50), 1), "p95_ms": round(1000 * percentile(latencies, 95), 1),
            "p99_ms": round(1000 * percentile(latencies, 99), 1), "health_checks": len(health),
            "health_failures": health_failures, "health_p50_ms": round(1000 * percentile(health, 50), 1),
            "health_p99_ms": round(1000 * percentile(health, 99), 1),
            "health_max_ms": round(1000 * (health[-1] if health else float("nan")), 1),
            "client_wait_p50_ms": round(1000 * percentile(client_waits, 50), 1),
            "client_wait_p99_ms": round(1000 * percentile(client_waits, 99), 1),
            "rejected_p50_ms": round(1000 * percentile(rejected_in, 50), 1),
            "rejected_p99_ms": round(1000 * percentile(rejected_in, 99), 1)}


def run_overload(args, sentences: list[str]) -> dict:
    port = free_port()
    process = start_server(args.model, port, True, args.server_arg)
    try:
        url = f"http://{HOST}:{port}"
        for sentence in sentences[:3]:
            httpx.post(f"{url}/translate", json={"text": [sentence], "beam": args.beam}, timeout=60)
        capacity = asyncio.run(load(url, sentences, args.requests, args.clients, args.time_limit, {"beam": args.beam}))
        rate = args.overload * capacity["req_per_s"]
        if rate <= 0:
            raise SystemExit("the capacity run answered nothing; cannot size the overload")
        result = asyncio.run(overload(url, sentences, rate, args.overload_seconds, args.overload_max_requests,
                                      args.overload_connections, {"beam": args.beam}))
        result["server_peak_rss_mib"] = round(peak_rss_mib(process.pid) or float("nan"), 1)
        metrics = httpx.get(f"{url}/metrics", timeout=10)
        result["metrics_status"] = metrics.status_code
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            result_code = process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            result_code = None
    result.update(capacity_req_per_s=capacity["req_per_s"], capacity_p50_ms=capacity["p50_ms"],
                  capacity_p99_ms=capacity["p99_ms"], factor=args.overload, server_exit_code=result_code)
    return result


def run_mode(args, batching: bool, sentences: list[str]) -> dict:
    port = free_port()
    process = start_server(args.model, port, batching, args.server_arg)
    try:
        url = f"http://{HOST}:{port}"
        # warm-up (not measured): the first calls pay for allocator and thread-pool start-up
        for sentence in sentences[:3]:
            httpx.post(f"{url}/translate", json={"text": [sentence], "beam": args.beam}, timeout=60)
        result = asyncio.run(load(url, sentences, args.requests, args.clients, args.time_limit,
                                  {"beam": args.beam}))
        result["server_peak_rss_mib"] = round(peak_rss_mib(process.pid) or float("nan"), 1)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
    result["batching"] = batching
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a translation model directory")
    parser.add_argument("--sentences", help="one source sentence a line (default: Multi30k test_2016_flickr.de)")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--time-limit", type=float, default=600.0, help="seconds per mode at most")
    parser.add_argument("--modes", default="on,off", help="modes to run, in order: on, off (batching) and "
                                                           "overload, e.g. on,off | on | overload")
    parser.add_argument("--overload", type=float, default=10.0, help="overload mode: times the measured capacity")
    parser.add_argument("--overload-seconds", type=float, default=15.0, help="overload mode: seconds of sending")
    parser.add_argument("--overload-max-requests", type=int, default=5000, help="overload mode: requests at most")
    parser.add_argument("--overload-connections", type=int, default=256, help="overload mode: connections at most")
    parser.add_argument("--server-arg", action="append", default=[], help="extra seq2seq-serve override")
    parser.add_argument("--out", default="benchmarks/results/serve_load.json")
    args = parser.parse_args()
    if args.requests < 1 or args.clients < 1 or args.time_limit <= 0:
        raise SystemExit("--requests, --clients and --time-limit must be positive")
    modes = args.modes.split(",")
    if not set(modes) <= {"on", "off", "overload"}:
        raise SystemExit(f"--modes {args.modes}: each mode is on, off or overload")
    if args.overload <= 0 or args.overload_seconds <= 0 or args.overload_max_requests < 1 \
            or args.overload_connections < 1:
        raise SystemExit("--overload, --overload-seconds, --overload-max-requests, --overload-connections "
                         "must be positive")

    source = Path(args.sentences) if args.sentences else \
        Path(os.environ.get("SEQ2SEQ_DATA", "data")) / "multi30k" / "test_2016_flickr.de"
    if not source.is_file():
        raise SystemExit(f"{source}: not found; give --sentences FILE or set SEQ2SEQ_DATA")
    sentences = [line.strip() for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]

    results = [run_mode(args, mode == "on", sentences) for mode in modes if mode != "overload"]
    report = {"cpu": cpu_model(), "cores": os.cpu_count(), "model": str(args.model), "clients": args.clients,
              "requests": args.requests, "beam": args.beam, "source": str(source), "server_args": args.server_arg,
              "results": results}
    if "overload" in modes:
        report["overload"] = run_overload(args, sentences)
    by_mode = {r["batching"]: r for r in results}
    if True in by_mode and False in by_mode and by_mode[False]["req_per_s"] > 0:
        report["speedup"] = round(by_mode[True]["req_per_s"] / by_mode[False]["req_per_s"], 2)

    print(f"CPU: {report['cpu']} ({report['cores']} cores); {args.clients} clients, {args.requests} requests, "
          f"beam {args.beam}")
    print(f"{'batching':>8} {'ok':>6} {'errors':>6} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
          f"{'peak RSS MiB':>12}")
    for r in results:
        print(f"{'on' if r['batching'] else 'off':>8} {r['ok']:>6} {r['errors']:>6} {r['req_per_s']:>8.2f} "
              f"{r['p50_ms']:>8.1f} {r['p95_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['server_peak_rss_mib']:>12.1f}"
              + ("" if r["complete"] else "  (stopped by --time-limit)"))
    if "speedup" in report:
        print(f"batching gives {report['speedup']}x the requests/s of one-at-a-time decoding")
    if "overload" in report:
        o = report["overload"]
        print(f"overload: capacity {o['capacity_req_per_s']} req/s (p99 {o['capacity_p99_ms']} ms) x {o['factor']:g} "
              f"= {o['offered_req_per_s']} req/s offered, {o['requests']} requests in {o['sending_s']} s "
              f"(server args: {' '.join(args.server_arg) or 'defaults'})")
        print(f"{'answered':>8} {'503':>6} {'504':>6} {'other':>6} {'ok/s':>7} {'p50 ms':>8} {'p95 ms':>8} "
              f"{'p99 ms':>8} {'peak RSS MiB':>12} {'health p50/p99/max ms':>22}")
        print(f"{o['answered']:>8} {o['rejected_503']:>6} {o['timed_out_504']:>6} {o['other']:>6} "
              f"{o['answered_per_s']:>7.2f} {o['p50_ms']:>8.1f} {o['p95_ms']:>8.1f} {o['p99_ms']:>8.1f} "
              f"{o['server_peak_rss_mib']:>12.1f} "
              f"{o['health_p50_ms']:>8.1f}/{o['health_p99_ms']:.1f}/{o['health_max_ms']:.1f}"
              f" ({o['health_checks']} checks, {o['health_failures']} failed)")
        print(f"503 answers took p50 {o['rejected_p50_ms']} ms, p99 {o['rejected_p99_ms']} ms; requests waited for "
              f"one of the client's {args.overload_connections} connections p50 {o['client_wait_p50_ms']} ms, "
              f"p99 {o['client_wait_p99_ms']} ms (not in the latencies above)")
        print(f"server exit code after SIGTERM: {o['server_exit_code']}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
