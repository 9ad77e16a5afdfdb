"""seq2seq-serve: an HTTP server (JSON API, streaming generation, a web page) over model directories.

    seq2seq-serve model=outputs/.../model                      # then open http://127.0.0.1:8000/
    seq2seq-serve model=[runs/de_en/model,runs/lm/model] port=8080 batching=false

The app itself is seq2seq.serving.app; this module reads the config and starts uvicorn.
"""

from __future__ import annotations

import socket

from omegaconf import DictConfig, OmegaConf

from seq2seq.command import hydra_command, run_as_command
from seq2seq.config import APPS_CONF_DIR
from seq2seq.errors import UserError

SETTINGS = ("batching", "batch_wait_ms", "batch_tokens", "max_texts", "max_text_chars", "max_beam",
            "max_generate_chars", "max_samples", "max_forecast_values", "max_horizon")


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


@run_as_command
def serve(cfg: DictConfig) -> None:
    import torch
    import uvicorn

    from seq2seq.serving.app import ServeSettings, create_app
    from seq2seq.serving.models import load_models, parse_model_argument

    model = OmegaConf.to_container(cfg.model, resolve=True) if OmegaConf.is_config(cfg.model) else cfg.model
    entries = parse_model_argument(model)
    try:
        settings = ServeSettings(**{name: cfg[name] for name in SETTINGS})
    except TypeError as error:
        raise UserError(f"bad serve setting ({error})") from None
    for name in SETTINGS[1:]:
        if not getattr(settings, name) >= (0 if name == "batch_wait_ms" else 1):
            raise UserError(f"{name}={getattr(settings, name)} must be positive")
    check_port_free(cfg.host, cfg.port)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    models = load_models(entries, device=cfg.device, precision=cfg.precision)
    app = create_app(models, settings)
    for served in models.values():
        print(f"serving {served.name} ({served.task}) from {served.path}", flush=True)
    print(f"open http://{cfg.host}:{cfg.port}/ (API docs at /docs); Ctrl-C stops", flush=True)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level=cfg.log_level)


@hydra_command(APPS_CONF_DIR, "serve")
def main(cfg: DictConfig) -> None:
    serve(cfg)


if __name__ == "__main__":
    main()
