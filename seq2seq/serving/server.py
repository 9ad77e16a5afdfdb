"""Starting seq2seq-serve: checked settings, the models loaded, uvicorn run until a signal.

Shared by the Hydra command (seq2seq.cli.serve) and the exported-model runtime's command
(seq2seq.portable.cli), so that both start, warn and stop the same way.
"""

from __future__ import annotations

import contextlib
import ipaddress
import signal
import socket
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from seq2seq.errors import UserError

SETTINGS = ("batching", "batch_wait_ms", "batch_tokens", "max_texts", "max_text_chars", "max_beam",
            "max_generate_chars", "max_samples", "max_forecast_values", "max_horizon", "max_queue",
            "timeout_s", "max_body_bytes", "shutdown_timeout_s", "api_key")
# The least value of each numeric setting; timeout_s must be above 0 (fractions are fine).
MINIMUM = {"batch_wait_ms": 0, "shutdown_timeout_s": 0}
ABOVE_ZERO = ("timeout_s",)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to any address


def check_settings(settings) -> None:
    for name in SETTINGS[1:]:
        value = getattr(settings, name)
        if name == "api_key":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{name}={value!r} must be a number")
        if name in ABOVE_ZERO and not value > 0:
            raise UserError(f"{name}={value} must be positive")
        if not value >= MINIMUM.get(name, 1):
            raise UserError(f"{name}={value} must be positive" if MINIMUM.get(name, 1) == 1 else
                            f"{name}={value} must be 0 or more")


def api_key_setting(value) -> str | None:
    """api_key= (from the config, which reads SEQ2SEQ_API_KEY unless api_key= is given); empty = none."""
    if value is None or value == "":
        return None
    return str(value)


def graceful_server(config):
    """uvicorn's server, made to exit 0 after a graceful stop by a signal.

    uvicorn sends the signal to itself again after shutting down (a SIGTERM would then end the
    process with -15, a SIGINT raise KeyboardInterrupt: exit 130 here); a stop we asked for is a
    normal end. The handlers stay uvicorn's own: the first signal stops gracefully, a second
    SIGINT forces the exit."""
    import uvicorn

    class GracefulServer(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):
            if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
                yield
                return
            originals = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in originals.items():
                    signal.signal(sig, handler)

    return GracefulServer(config)


def check_port_free(host: str, port: int) -> None:
    """A port in use or a host that is not ours is one line, before any model is loaded."""
    if not 0 <= port <= 65535:
        raise UserError(f"port={port} must be between 0 and 65535")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise UserError(f"host={host}: cannot resolve it ({error.strerror})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as error:
            raise UserError(f"cannot listen on {host}:{port} ({error.strerror or error})") from None


def run_server(entries: Sequence[tuple[str | None, str]], values: Mapping[str, Any], host: str, port: int,
               log_level: str = "info", threads: int = 0, device: str | None = None, precision: str = "auto") -> None:
    """Serve the model directories `entries` ([(name or None, path)]) with the ServeSettings `values`."""
    import uvicorn

    from seq2seq.serving.app import ServeSettings, create_app
    from seq2seq.serving.models import load_models

    try:
        values = dict(values)
        values["api_key"] = api_key_setting(values.get("api_key"))
        settings = ServeSettings(**values)
    except TypeError as error:
        raise UserError(f"bad serve setting ({error})") from None
    check_settings(settings)
    if not settings.api_key and not is_loopback(str(host)):
        print(f"warning: host={host} lets other machines in and no API key is set: anyone who reaches "
              f"port {port} can use the models (set SEQ2SEQ_API_KEY)", file=sys.stderr, flush=True)
    check_port_free(host, port)
    if threads:
        try:
            import torch
        except ModuleNotFoundError:
            pass  # the exported-model runtime: onnxruntime takes `threads` per model
        else:
            torch.set_num_threads(int(threads))
    models = load_models(entries, device=device, precision=precision, threads=threads)
    app = create_app(models, settings)
    for served in models.values():
        print(f"serving {served.name} ({served.task}) from {served.path}", flush=True)
    print(f"open http://{host}:{port}/ (API docs at /docs){'; API key required' if settings.api_key else ''}"
          f"; Ctrl-C stops", flush=True)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level,
                            timeout_graceful_shutdown=settings.shutdown_timeout_s)
    graceful_server(config).run()
