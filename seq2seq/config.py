"""Where the configs live, and building objects from them with Hydra."""

from __future__ import annotations

from pathlib import Path

from hydra.errors import InstantiationException
from hydra.utils import instantiate

import seq2seq.tasks  # noqa: F401  (registers the ${task_setting:...} resolver the configs use)
from seq2seq.errors import UserError

# conf/ sits beside the package in a source checkout (editable install).
CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


# Primary configs of the commands that load a model directory. They live apart from the
# training groups so that `model=<path>` is a plain value there, not the `model/` config group.
APPS_CONF_DIR = str(Path(CONF_DIR) / "apps")


def build(config, **kwargs):
    """hydra.utils.instantiate, letting our own one-line errors through unwrapped."""
    try:
        return instantiate(config, **kwargs)
    except InstantiationException as error:
        if isinstance(error.__cause__, UserError):
            raise error.__cause__ from None
        raise UserError(str(error).replace("\n", " ")) from None
