"""seq2seq-serve: an HTTP server (JSON API, streaming generation, a web page) over model directories.

    seq2seq-serve model=outputs/.../model                      # then open http://127.0.0.1:8000/
    seq2seq-serve model=[runs/de_en/model,runs/lm/model] port=8080 batching=false
    SEQ2SEQ_API_KEY=... seq2seq-serve model=... host=0.0.0.0   # the key stays out of the process list

The app itself is seq2seq.serving.app; this module reads the config and starts uvicorn.
SIGTERM and SIGINT (Ctrl-C) stop it the same way: no new connections, in-flight requests get
shutdown_timeout_s seconds and are then cancelled, exit 0.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from seq2seq.command import hydra_command, run_as_command
from seq2seq.config import APPS_CONF_DIR
from seq2seq.serving.server import (  # noqa: F401  (the tests' and users' names)
    SETTINGS,
    check_port_free,
    graceful_server,
    is_loopback,
    run_server,
)


@run_as_command
def serve(cfg: DictConfig) -> None:
    from seq2seq.serving.models import parse_model_argument

    model = OmegaConf.to_container(cfg.model, resolve=True) if OmegaConf.is_config(cfg.model) else cfg.model
    run_server(parse_model_argument(model), {name: cfg[name] for name in SETTINGS}, cfg.host, cfg.port,
               cfg.log_level, cfg.threads, cfg.device, cfg.precision)


@hydra_command(APPS_CONF_DIR, "serve")
def main(cfg: DictConfig) -> None:
    serve(cfg)


if __name__ == "__main__":
    main()
