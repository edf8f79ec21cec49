"""Options declared once: CLI flags derived from the pydantic models, and argparse with the one-line error contract."""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel

from miner.config import M, validate_model

# The report formats (miner.report.build.FORMATS; declared here so `miner --help` does not import the report).
REPORT_FORMATS = ("html", "md", "json")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_model_options(parser: argparse.ArgumentParser, model: type[BaseModel], skip: Sequence[str] = ()) -> None:
    """Declare one CLI option per model field; the field's description is its help text.

    Defaults stay with the model: options left unset are not passed, so the model's defaults apply.
    """
    group = parser.add_argument_group(model.__name__, (model.__doc__ or "").strip().splitlines()[0])
    for name, info in model.model_fields.items():
        if name in skip:
            continue
        ann = info.annotation
        args = typing.get_args(ann)
        if typing.get_origin(ann) in (typing.Union, types.UnionType):
            non_none = [a for a in args if a is not type(None)]
            ann = non_none[0] if len(non_none) == 1 else ann
            args = typing.get_args(ann)
        help_text = (info.description or "") + (f" [default: {info.default}]" if info.default is not None else "")
        kwargs: dict = {"dest": name, "default": argparse.SUPPRESS, "help": help_text}
        if ann is bool:
            group.add_argument(_flag(name), action=argparse.BooleanOptionalAction, **kwargs)
        elif typing.get_origin(ann) is typing.Literal:
            group.add_argument(_flag(name), choices=list(args), **kwargs)
        elif typing.get_origin(ann) is list:
            group.add_argument(_flag(name), nargs="+", type=args[0] if args else str, **kwargs)
        elif ann in (int, float, str, Path):
            group.add_argument(_flag(name), type=typing.cast(type, ann), metavar=name.upper(), **kwargs)
        else:
            group.add_argument(_flag(name), type=str, metavar=name.upper(), **kwargs)


def add_hardware_options(parser: argparse.ArgumentParser) -> None:
    """--allow-other-hardware, declared once for the commands that mine (`miner mine`, `miner run`)."""
    parser.add_argument("--allow-other-hardware", action="store_true",
                        help="Resume a run whose checkpoint was mined on another GPU model or torch/CUDA version "
                             "(refused by default: scores may differ in the last bits, and the queues would mix both).")


def model_from_args(model: type[M], ns: argparse.Namespace) -> M:
    """Build and validate a model from the options the user set; a bad value is one clear line."""
    values = {k: v for k, v in vars(ns).items() if k in model.model_fields}
    return validate_model(model, values, "option")



class ArgumentParser(argparse.ArgumentParser):
    """argparse with the CLI's error contract: a usage error is one `miner: error:` line and exit status 2.

    Example: `miner corpus prepare a.txt` -> "miner: error: corpus prepare: the following arguments are
    required: --out (see `miner corpus prepare --help`)".
    """

    def error(self, message: str) -> typing.NoReturn:
        command = self.prog.removeprefix("miner").strip()
        where = f"{command}: " if command else ""
        self.exit(2, f"miner: error: {where}{message} (see `{self.prog} --help`)\n")

