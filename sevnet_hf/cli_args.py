"""Command lines built from argument dataclasses, the same way for every ``sevnet-hf`` command.

Each command describes its options as a dataclass and parses them with :func:`parse_args` (or builds the parser with
:func:`build_parser`): ``transformers.HfArgumentParser`` plus what a newcomer otherwise trips over.

- The usage line names the command (``usage: sevnet-hf prepare bp4d ...``), not just ``sevnet-hf``.
- A default is shown once: not again after a help text that states it already, never as "(default: None)".
- ``--no_x`` says "Turn off --x" instead of repeating the help of ``--x``.
- A JSON/YAML arguments file (``sevnet-hf train recipe.yaml --fold 2``) that is missing, malformed, not a mapping or
  has an unknown key gives one line naming the file (and the line or key) and exit status 2, not a traceback.

transformers is imported only when a parser is built, so importing this module costs nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

T = TypeVar("T")
ARGUMENTS_FILE_SUFFIXES = (".json", ".yaml", ".yml")


class UsageError(SystemExit):
    """Exit status 2 after a one-line message on stderr; ``str()`` gives the message."""

    def __init__(self, message: str) -> None:
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``(default: X)`` after a help text, except where it would repeat the text, say ``None`` or describe a switch."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default is None or action.default is argparse.SUPPRESS or action.nargs == 0:
            return text
        if "default" in text.lower():  # "(default: astronaut)" written by hand already
            return text
        return super()._get_help_string(action)


def build_parser(dataclass_types: type | Iterable[type], prog: str, **kwargs: Any) -> Any:
    """An ``HfArgumentParser`` for ``dataclass_types`` whose usage line starts with ``prog`` (``"sevnet-hf demo"``).

    ``kwargs`` go to ``argparse.ArgumentParser`` (``usage``, ``description``, ...).
    """
    from transformers import HfArgumentParser

    kwargs.setdefault("formatter_class", HelpFormatter)
    parser = HfArgumentParser(dataclass_types, prog=prog, **kwargs)
    for action in parser._actions:
        if action.nargs == 0 and action.const is False and action.option_strings[:1] == [f"--no_{action.dest}"]:
            action.help = f"Turn off --{action.dest} (the same as --{action.dest} false)."
    return parser


def parse_args(argv: Sequence[str] | None, dataclass_type: type[T], prog: str) -> T:
    """Parse flags, or a JSON/YAML arguments file followed by flags that override it, into ``dataclass_type``.

    ``sevnet-hf train examples/paper_strict.yaml --dataset prepared/bp4d``: the file's keys are the flags' names; a
    mapping (e.g. ``config_overrides``) is passed on as JSON, a list to a list option as its items.
    """
    parser = build_parser(dataclass_type, prog)
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].endswith(ARGUMENTS_FILE_SUFFIXES):
        argv = arguments_file_flags(argv[0], parser) + argv[1:]
    return parser.parse_args_into_dataclasses(args=argv)[0]


def arguments_file_flags(path: str | Path, parser: Any) -> list[str]:
    """The flags a JSON/YAML arguments file stands for; a bad file is a :class:`UsageError` naming it."""
    file = Path(path)
    if not file.is_file():
        usage_error(parser, f"arguments file {file} does not exist")
    text = file.read_text(encoding="utf-8")
    values = _load_mapping(file, text, parser)
    fields = {field.name for dtype in parser.dataclass_types for field in dataclasses.fields(dtype) if field.init}
    unknown = [key for key in values if key not in fields]
    if unknown:
        named = []
        for key in unknown:
            close = difflib.get_close_matches(str(key), sorted(fields), n=1)
            named.append(f"{key} (did you mean {close[0]}?)" if close else str(key))
        usage_error(parser, f"{file}: unknown argument(s) {', '.join(named)}; `{parser.prog} --help` lists the options")
    options = {action.option_strings[0]: action for action in parser._actions if action.option_strings}
    flags: list[str] = []
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, list) and options[f"--{key}"].nargs in ("+", "*"):
            flags += [f"--{key}", *(str(item) for item in value)] if value else []
            continue
        if isinstance(value, (dict, list)):
            value = json.dumps(value)
        elif isinstance(value, bool):
            value = str(value).lower()
        flags.append(f"--{key}={value}")
    return flags


def usage_error(parser: Any, message: str) -> NoReturn:
    """Print ``PROG: error: MESSAGE`` on stderr and exit with status 2 (raises :class:`UsageError`)."""
    print(f"{parser.prog}: error: {message}", file=sys.stderr)
    raise UsageError(message)


def _load_mapping(file: Path, text: str, parser: Any) -> dict:
    if file.suffix == ".json":
        try:
            values = json.loads(text)
        except json.JSONDecodeError as error:
            usage_error(parser, f"{file}, line {error.lineno}: not valid JSON ({error.msg})")
    else:
        import yaml

        try:
            values = yaml.safe_load(text)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f", line {mark.line + 1}" if mark is not None else ""
            usage_error(parser, f"{file}{where}: not valid YAML ({getattr(error, 'problem', None) or error})")
    if not isinstance(values, dict):
        usage_error(parser, f"{file} must hold a mapping of argument names to values, got {type(values).__name__}")
    return values
