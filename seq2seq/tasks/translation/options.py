"""Every translation decoding option, in one type: `DecodingOptions`.

The front ends are derived from it, so that an option is added here (and used in the search)
and nowhere else:

  configs     `decoding/default` (training: what model.json's `decoding` block records) and the
              `translation_decoding` node that seq2seq-translate / -evaluate read, where every
              option is null, meaning "the model's default" (seq2seq.config registers both)
  Python      `Translator.translate(lines, beam=4)`: keyword changes of the model's defaults
  server      the /translate request body (`request_fields`), null or absent = the model's default
  prompt      the `:command` table (`prompt_settings`)

Precedence, lowest first: the defaults below, the model's `decoding` block in model.json, then
what the user gives. Imports no torch: the commands read their settings before any model work.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from seq2seq.errors import UserError

SHORTLIST_CHOICES = ("auto", "true", "false")


def option(default: Any, help: str, *, minimum: float | None = None, above: float | None = None,
           maximum: float | None = None, command: str | None = None, per_request: bool = True) -> Any:
    """A field with its documentation and bounds; `command` names its `:command` at the prompt,
    `per_request=False` keeps it out of server requests (a server setting instead)."""
    return field(default=default, metadata={"help": help, "minimum": minimum, "above": above,
                                            "maximum": maximum, "command": command, "per_request": per_request})


@dataclass(frozen=True)
class DecodingOptions:
    beam: int = option(5, "beam size (1 = greedy)", minimum=1, command="beam")
    nbest: int = option(1, "translations per sentence, best first (at most beam; with sampling, the samples)",
                        minimum=1, command="nbest")
    length_penalty: float = option(1.0, "GNMT length penalty alpha (0 = off)", minimum=0.0, command="lp")
    max_len_ratio: float = option(2.0, "at most ceil(ratio * source pieces) + offset target pieces", above=0.0)
    max_len_offset: int = option(10, "see max_len_ratio", minimum=0)
    no_repeat_ngram_size: int = option(0, "forbid repeating n-grams of this size (0 = off)", minimum=0,
                                       command="norepeat")
    sampling: bool = option(False, "sample instead of searching", command="sample")
    temperature: float = option(1.0, "sampling temperature", above=0.0, command="temperature")
    top_k: int = option(0, "sample among the k most probable pieces (0 = all)", minimum=0, command="top_k")
    top_p: float = option(1.0, "sample from the smallest set with this probability (nucleus)", above=0.0,
                          maximum=1.0, command="top_p")
    seed: int | None = option(None, "makes sampling reproducible")
    shortlist: str = option("auto", "restrict the output layer to the batch's vocabulary shortlist: auto (when "
                                    "the model directory has one) | true | false", command="shortlist")
    batch_tokens: int = option(4000, "padded source tokens per decoding batch", minimum=1, per_request=False)

    def __post_init__(self) -> None:
        for spec in dataclasses.fields(self):
            value = _checked(spec, getattr(self, spec.name))
            object.__setattr__(self, spec.name, value)
        if not self.sampling and self.nbest > self.beam:
            raise UserError(f"nbest={self.nbest} must be between 1 and beam={self.beam}")

    def updated(self, values: Mapping[str, Any] | None = None, **changes: Any) -> DecodingOptions:
        """A copy with the given options changed; None means "keep" (a setting left unset)."""
        merged = dict(values or {}) | changes
        unknown = sorted(set(merged) - set(OPTION_NAMES))
        if unknown:
            raise UserError(f"unknown decoding option {unknown[0]!r} (known: {', '.join(OPTION_NAMES)})")
        return dataclasses.replace(self, **{k: v for k, v in merged.items() if v is not None})

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


OPTION_NAMES = tuple(spec.name for spec in dataclasses.fields(DecodingOptions))
FIELDS = {spec.name: spec for spec in dataclasses.fields(DecodingOptions)}


def _type_name(spec: dataclasses.Field) -> str:
    return {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a word",
            "int | None": "an integer"}[str(spec.type)]


def _checked(spec: dataclasses.Field, value: Any) -> Any:
    """The value in its field's type, or a one-line UserError naming the option."""
    name, kind, meta = spec.name, str(spec.type), spec.metadata
    if name == "shortlist":
        text = {True: "true", False: "false"}.get(value, value) if isinstance(value, bool) else str(value).lower()
        if text not in SHORTLIST_CHOICES:
            raise UserError(f"shortlist={value!r} must be one of {', '.join(SHORTLIST_CHOICES)}")
        return text
    if value is None and kind == "int | None":
        return None
    if kind == "bool":
        if not isinstance(value, bool):
            raise UserError(f"{name}={value!r} must be true or false")
        return value
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not numeric or (kind.startswith("int") and not float(value).is_integer()):
        raise UserError(f"{name}={value!r} must be {_type_name(spec)}")
    value = float(value) if kind == "float" else int(value)
    if meta["minimum"] is not None and value < meta["minimum"]:
        bound = "0 (off) or positive" if meta["minimum"] == 0 else f"at least {meta['minimum']}"
        raise UserError(f"{name}={value} must be {bound}")
    above, maximum = meta["above"], meta["maximum"]
    if above is not None and maximum is not None and not above < value <= maximum:
        raise UserError(f"{name}={value} must be in ({above:g}, {maximum:g}]")
    if above is not None and not value > above:
        raise UserError(f"{name}={value} must be greater than {above:g}")
    if maximum is not None and value > maximum:
        raise UserError(f"{name}={value} must be at most {maximum:g}")
    return value


def model_defaults(config: Mapping[str, Any], where: str = "model.json") -> DecodingOptions:
    """The model's defaults: its model.json `decoding` block over the type's defaults.

    Names this version does not know (a newer toolkit's options) are left out, not refused."""
    block = config.get("decoding") or {}
    if not isinstance(block, Mapping):
        raise UserError(f"{where}: 'decoding' must be a mapping of option names to values")
    known = {k: v for k, v in block.items() if k in FIELDS}
    try:
        return DecodingOptions().updated(known)
    except UserError as error:
        raise UserError(f"{where}: decoding defaults: {error}") from None


# ------------------------------------------------------------------ the derived front ends
def config_node(unset: bool) -> dict[str, Any]:
    """A config node of every option: the defaults (training), or all null ("the model's")."""
    return {name: None if unset else spec.default for name, spec in FIELDS.items()}


def request_fields() -> dict[str, tuple[Any, Any]]:
    """(type, pydantic Field) per option a server request may set; null = the model's default."""
    from pydantic import Field

    fields = {}
    for name, spec in FIELDS.items():
        meta = spec.metadata
        if not meta["per_request"]:
            continue
        kind = {"int": int, "float": float, "bool": bool, "str": str | bool, "int | None": int}[str(spec.type)]
        bounds = {key: meta[m] for key, m in (("ge", "minimum"), ("gt", "above"), ("le", "maximum"))
                  if meta[m] is not None}
        default = "the model's" if spec.default is None else f"the model's, else {spec.default!r}"
        fields[name] = (kind | None, Field(None, description=f"{meta['help']}; default: {default}", **bounds))
    return fields


def prompt_settings() -> dict[str, tuple[str, Any]]:
    """`:command` -> (option, parser of its text) for the interactive prompt."""
    from seq2seq.prompt import on_off

    parsers = {"int": int, "float": float, "bool": on_off, "str": str}
    return {spec.metadata["command"]: (name, parsers[str(spec.type)])
            for name, spec in FIELDS.items() if spec.metadata["command"]}


def prompt_help() -> str:
    """The prompt's help lines for the decoding commands."""
    usage = {"int": "N", "float": "X", "bool": "on|off", "str": "|".join(SHORTLIST_CHOICES)}
    lines = []
    for command, (name, _) in prompt_settings().items():
        spec = FIELDS[name]
        lines.append(f"  :{command} {usage[str(spec.type)]}".ljust(24) + spec.metadata["help"])
    return "\n".join(lines)
