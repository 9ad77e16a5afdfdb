"""Checkpoint averaging: a model directory whose weights are the mean of several checkpoints or
model directories of one model (same config, same tokenizers), as fairseq's average_checkpoints.

Inputs may be model directories, Lightning checkpoints (`<run>/checkpoints/*.ckpt`), or a folder
of checkpoints (every `*.ckpt` in it but `last.ckpt` and `interrupted.ckpt`: the best ones that
`callbacks.model_checkpoint.save_top_k` kept). The model config, tokenizer files and model.json
extras come from a model directory: the first input that is one, or `like`, or for checkpoints
the `model/` folder of their run.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from seq2seq.bundle import CONFIG_FILE, WEIGHTS_FILE, load_bundle, load_state_dict, read_bundle_config, save_bundle
from seq2seq.errors import UserError

NOT_AVERAGED = ("last.ckpt", "interrupted.ckpt")


def expand_inputs(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Model directories and checkpoint files; a folder of checkpoints becomes its kept checkpoints."""
    paths: list[Path] = []
    for entry in inputs:
        path = Path(entry)
        if not path.exists():
            raise UserError(f"{path}: no such checkpoint or model directory")
        if path.is_dir() and not (path / CONFIG_FILE).is_file():
            found = sorted(p for p in path.glob("*.ckpt") if p.name not in NOT_AVERAGED)
            if not found:
                raise UserError(f"{path}: neither a model directory nor a folder holding checkpoints (*.ckpt)")
            paths.extend(found)
        else:
            paths.append(path)
    return paths


def model_weights(path: Path) -> dict[str, torch.Tensor]:
    """The model's tensors of a model directory or a training checkpoint."""
    if path.is_dir():
        read_bundle_config(path)
        state = load_state_dict(path / WEIGHTS_FILE)
    else:
        checkpoint = load_state_dict(path)
        state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
        if not isinstance(state, dict):
            raise UserError(f"{path}: not a training checkpoint (no state_dict)")
        state = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    if not isinstance(state, dict) or not state:
        raise UserError(f"{path}: holds no model weights")
    return state


def average_states(states: Sequence[dict[str, torch.Tensor]], names: Sequence[str] | None = None
                   ) -> dict[str, torch.Tensor]:
    """The element-wise mean of floating-point tensors (summed in float64, cast back to each
    tensor's type); other tensors (counters, integer buffers) must agree and are kept."""
    if not states:
        raise UserError("nothing to average: give at least one checkpoint or model directory")
    names = list(names or [str(i) for i in range(len(states))])
    first = states[0]
    for name, state in zip(names[1:], states[1:]):
        if state.keys() != first.keys():
            missing = sorted(set(first) ^ set(state))[0]
            raise UserError(f"{name}: not the same model as {names[0]} (parameter {missing} differs)")
        for key, tensor in state.items():
            if tensor.shape != first[key].shape:
                raise UserError(f"{name}: not the same model as {names[0]} ({key} is {tuple(tensor.shape)}, "
                                f"not {tuple(first[key].shape)})")
    averaged = {}
    for key, reference in first.items():
        if reference.is_floating_point():
            total = torch.zeros(reference.shape, dtype=torch.float64)
            for state in states:
                total += state[key].to(torch.float64)
            averaged[key] = (total / len(states)).to(reference.dtype)
        else:
            for name, state in zip(names, states):
                if not torch.equal(state[key], reference):
                    raise UserError(f"{name}: {key} differs from {names[0]} and cannot be averaged")
            averaged[key] = reference.clone()
    return averaged


KEPT_FILES = ("shortlist.json",)  # seq2seq.tasks.translation.shortlist.SHORTLIST_FILE


def template_directory(paths: Sequence[Path], like: str | os.PathLike | None) -> Path:
    if like is not None:
        return Path(like)
    for path in paths:
        if path.is_dir():
            return path
    run_model = paths[0].resolve().parent.parent / "model"
    if not (run_model / CONFIG_FILE).is_file():
        raise UserError(f"{paths[0]}: no model directory beside its run ({run_model}); "
                        "name one with like=<model dir> (it gives the config and tokenizers)")
    return run_model


def average(inputs: Sequence[str | os.PathLike], output: str | os.PathLike,
            like: str | os.PathLike | None = None) -> Path:
    """Write `output`, a model directory with the mean weights of `inputs`."""
    paths = expand_inputs(inputs)
    template = template_directory(paths, like)
    bundle = load_bundle(template)
    config = bundle.config
    for path in paths:
        if path.is_dir():
            other = read_bundle_config(path)
            if other.get("model_config") != config.get("model_config"):
                raise UserError(f"{path}: another model config than {template}; only one model's weights average")
            for role, name in config.get("tokenizers", {}).items():
                theirs = other.get("tokenizers", {}).get(role)
                if theirs is None or (path / theirs).read_bytes() != (template / name).read_bytes():
                    raise UserError(f"{path}: its {role} tokenizer differs from {template}'s")
    states = [model_weights(path) for path in paths]
    try:
        bundle.model.load_state_dict(average_states(states, [str(p) for p in paths]))
    except RuntimeError as error:
        raise UserError(f"the checkpoints do not fit the model of {template} "
                        f"({str(error).strip().splitlines()[0]})") from None
    extra = {k: v for k, v in config.items()
             if k not in ("format", "format_version", "model_type", "model_config", "tokenizers")}
    extra["averaged_from"] = [str(p.resolve()) for p in paths]
    tokenizer_files = {role: template / name for role, name in config.get("tokenizers", {}).items()}
    # Averaging changes no vocabulary, so the template's shortlist (built from the same training
    # corpus and tokenizers) stays valid.
    kept = {name: template / name for name in KEPT_FILES if (template / name).is_file()}
    return save_bundle(output, bundle.model, config["model_type"], tokenizer_files, extra, files=kept)
