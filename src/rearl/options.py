"""Options defined once: a config dataclass field carries its default and help, and the CLI's flags
are generated from it.

`option(...)` is `dataclasses.field` with the help text and a few CLI hints in its metadata (the
same `help` / `aliases` keys as transformers' `HfArgumentParser`). `add_options` turns a config
class into argparse flags. We do not hand the classes to `HfArgumentParser` itself: it parses a
list field as one `nargs="+"` flag, so `--input a --input b` (today's repeatable flags) would keep
only `b` without a word, and it cannot express the inverse flags the CLI has (`--full` for
`use_peft=False`, `--no-gold` for `use_gold=False`).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, Callable, Sequence

_MISSING = dataclasses.MISSING


def option(default: Any = _MISSING, help: str = "", *, default_factory: Any = _MISSING, flag: str | None = None,
           aliases: Sequence[str] = (), choices: Sequence[Any] | None = None, parse: Callable[[str], Any] | None = None,
           split: bool = False, positional: bool = False, required: bool = False, cli: bool = True) -> Any:
    """A config field with its help text.

    flag: the CLI flag when it is not `--field-name` (for a bool that defaults to True: the flag that
    sets it False, default `--no-field-name`); aliases: more flags; choices: allowed values;
    parse: how a flag's string becomes the value; split: a list given comma-separated in one flag
    (instead of a repeatable flag); positional: a positional argument; required: the CLI asks for
    it although Python callers have a default; cli: False keeps it out of the CLI (recipes and
    Python only).
    """
    md = {"help": help, "flag": flag, "aliases": list(aliases), "choices": choices, "parse": parse, "split": split,
          "positional": positional, "required": required, "cli": cli}
    if default_factory is not _MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=md)
    return dataclasses.field(default=default, metadata=md)


def _unwrap(tp: Any) -> tuple[Any, bool]:
    """(the type without None, whether it is a list)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        tp = args[0] if len(args) == 1 else str
        origin = typing.get_origin(tp)
    if origin in (list, tuple, Sequence, typing.Sequence) or tp in (list, tuple):
        args = typing.get_args(tp)
        return (args[0] if args else str), True
    return tp, False


def _split(parse: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    def conv(s: str) -> list[Any]:
        return [parse(x.strip()) for x in s.split(",") if x.strip()]

    return conv


def add_options(parser: argparse.ArgumentParser, cls: type, *, only_given: bool = False,
                skip: Sequence[str] = ()) -> None:
    """Add a flag for every CLI field of the dataclass `cls`.

    only_given: flags that are not given stay out of the parsed namespace (for options that
    override a recipe), instead of taking the field's default.
    """
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        md = f.metadata
        if not md.get("cli", True) or f.name in skip:
            continue
        tp, is_list = _unwrap(hints[f.name])
        has_default = f.default is not _MISSING or f.default_factory is not _MISSING
        default = f.default if f.default is not _MISSING else (f.default_factory() if has_default else None)
        help_ = md.get("help") or ""
        kw: dict[str, Any] = {"dest": f.name}
        if md.get("choices"):
            kw["choices"] = list(md["choices"])
        if tp is bool and not is_list:
            if default is True:
                flag = md.get("flag") or f"--no-{f.name.replace('_', '-')}"
                kw["action"] = "store_false"
            else:
                flag = md.get("flag") or f"--{f.name.replace('_', '-')}"
                kw["action"] = "store_true"
            flags = [flag, *md.get("aliases", [])]
        else:
            parse = md.get("parse") or (tp if tp in (int, float, str) else str)
            if is_list and md.get("split"):
                kw["type"] = _split(parse)
            elif is_list:
                kw["type"], kw["action"] = parse, "append"
            else:
                kw["type"] = parse
            if md.get("positional"):
                flags = [f.name]
                kw.pop("dest")
                kw["metavar"] = f.name.upper()
            else:
                flags = [md.get("flag") or f"--{f.name.replace('_', '-')}", *md.get("aliases", [])]
                if not has_default or md.get("required"):
                    kw["required"] = True
            if has_default and default not in (None, [], ()) and not only_given and not md.get("required"):
                shown = ",".join(map(str, default)) if isinstance(default, (list, tuple)) else default
                help_ = f"{help_} (default: {shown})" if help_ else f"default: {shown}"
        if only_given:
            kw["default"] = argparse.SUPPRESS
        elif has_default and kw.get("action") != "append":
            kw["default"] = default
        kw["help"] = help_.replace("%", "%%")
        parser.add_argument(*flags, **kw)


def from_args(cls: type, ns: argparse.Namespace, **extra: Any) -> Any:
    """An instance of `cls` from the parsed flags (fields not on the CLI keep their defaults)."""
    names = {f.name for f in dataclasses.fields(cls)}
    given = {k: v for k, v in vars(ns).items() if k in names}
    for f in dataclasses.fields(cls):  # a repeatable flag never given: the field's default, not None
        if f.name in given and given[f.name] is None and f.default_factory is not _MISSING:
            given[f.name] = f.default_factory()
    return cls(**{**given, **extra})
