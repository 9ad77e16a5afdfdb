"""Free text on the command line reaches the command exactly as typed; grammar errors are one line."""

from __future__ import annotations

import subprocess

import pytest
from hydra import compose, initialize_config_dir
from hypothesis import given, settings
from hypothesis import strategies as st

from seq2seq.command_line import check_overrides, free_text_arguments, quoted_argument
from seq2seq.config import APPS_CONF_DIR, CONF_DIR
from seq2seq.errors import UserError

# Any text one shell argument can hold: every script, emoji, quotes, brackets, `=`, `$`, newlines
# (only NUL cannot be in an argument). Characters Hydra's grammar treats specially are drawn often.
SPECIAL = "\\'\",:=[]{}()$ \n\t%#@!*?~`|<>"
# What a command line can carry: no NUL, no lone surrogates (argv is encoded as UTF-8).
TEXT = st.text(st.one_of(st.sampled_from(SPECIAL), st.characters(blacklist_characters="\x00",
                                                                 blacklist_categories=("Cs",))), max_size=40)


def composed(config_dir: str, config_name: str, arguments: list[str]):
    with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
        return compose(config_name, overrides=arguments)


@settings(max_examples=100, deadline=None)
@given(prompt=TEXT)
def test_a_prompt_reaches_the_command_as_typed(prompt):
    arguments = free_text_arguments(["model=m", f"prompt={prompt}"], free_text=("prompt",))
    check_overrides(arguments)
    cfg = composed(APPS_CONF_DIR, "generate", arguments)
    assert cfg.prompt == prompt
    assert cfg.model == "m"


@settings(max_examples=40, deadline=None)
@given(stops=st.lists(TEXT, min_size=1, max_size=4))
def test_repeated_stop_settings_become_one_list_in_order(stops):
    arguments = free_text_arguments([f"stop={text}" for text in stops] + ["max_chars=7"],
                                    free_text_lists=("stop",))
    cfg = composed(APPS_CONF_DIR, "generate", arguments)
    assert list(cfg.stop) == stops
    assert cfg.max_chars == 7


@settings(max_examples=30, deadline=None)
@given(prompt=TEXT)
def test_the_training_sample_prompt_is_free_text_too(prompt):
    arguments = free_text_arguments(["experiment=tiny_shakespeare_char", f"task.sample_prompt={prompt}"],
                                    free_text=("task.sample_prompt",))
    assert composed(CONF_DIR, "train", arguments).task.sample_prompt == prompt


def test_hydra_options_and_their_values_pass_unchanged():
    argv = ["--cfg", "job", "-p", "prompt=x", "prompt=a,b", "-m", "hydra.run.dir=out"]
    assert free_text_arguments(argv, free_text=("prompt",)) == [
        "--cfg", "job", "-p", "prompt=x", "prompt='a,b'", "-m", "hydra.run.dir=out"]


@settings(max_examples=100, deadline=None)
@given(value=TEXT)
def test_an_argument_hydra_cannot_take_says_how_to_pass_it(value):
    """Any value of a setting that is not free text either reads as typed or fails with one line
    whose suggested argument, typed in a shell, gives the command exactly that value."""
    argument = f"model={value}"
    try:
        check_overrides([argument])
        return
    except UserError as error:
        message = str(error)
    assert "\n" not in message.replace(repr(argument), "")
    suggestion = quoted_argument("model", value)
    assert message.endswith(suggestion) or f"{suggestion}; to sweep" in message
    typed = subprocess.run(["bash", "-c", f"printf %s {suggestion}"], capture_output=True,
                           check=True).stdout.decode()
    check_overrides([typed])
    assert composed(APPS_CONF_DIR, "translate", [typed]).model == value


def test_a_sweep_is_an_error_unless_multirun_is_asked_for():
    with pytest.raises(UserError, match="reads as a sweep"):
        check_overrides(["model.attention=none,bahdanau"])
    check_overrides(["-m", "model.attention=none,bahdanau"])
