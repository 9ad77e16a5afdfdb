"""Where the configs live, and building objects from them with Hydra."""

from __future__ import annotations

from pathlib import Path

import seq2seq.tasks  # noqa: F401  (registers the ${task_setting:...} resolver the configs use)
from seq2seq.errors import UserError

# The configs ship inside the package (seq2seq/conf, package data), so a wheel or `pip install .`
# finds them wherever it is installed; the checkout's top-level `conf` is a link to this folder.
# Users add folders of their own with `hydra.searchpath=[file://my_conf]`.
CONF_DIR = str(Path(__file__).resolve().parent / "conf")


# Primary configs of the commands that load a model directory. They live apart from the
# training groups so that `model=<path>` is a plain value there, not the `model/` config group.
APPS_CONF_DIR = str(Path(CONF_DIR) / "apps")


def register_configs() -> None:
    """Config nodes derived from code rather than written in YAML: the translation decoding
    options (seq2seq.tasks.translation.options), as training's `decoding: default` group (the
    model's defaults, recorded in model.json) and as the all-null `translation_decoding` node the
    translate and evaluate commands extend ("null: the model's default")."""
    from hydra.core.config_store import ConfigStore

    from seq2seq.tasks.translation.options import config_node

    store = ConfigStore.instance()
    store.store(group="decoding", name="default", node=config_node(unset=False))
    store.store(name="translation_decoding", node=config_node(unset=True))


def build(config, **kwargs):
    """hydra.utils.instantiate, letting our own one-line errors through unwrapped."""
    # Imported here: hydra.utils costs half a second, and commands that only read their config
    # (or print --help) never build anything.
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(config, **kwargs)
    except InstantiationException as error:
        if isinstance(error.__cause__, UserError):
            raise error.__cause__ from None
        raise UserError(str(error).replace("\n", " ")) from None


# At import, so that every way of composing a config (the commands, Hydra's compose API in the
# benchmarks and tests) finds the nodes.
register_configs()
