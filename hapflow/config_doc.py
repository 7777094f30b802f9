"""The study-file reference, ``docs/config.md``, generated from the section dataclasses.

Every section of :data:`hapflow.sections.SECTIONS`, every key with its type, default and the
docstring line under its field, and the commands that read the section (each command module's
``COMMAND.reads``). A test checks that ``docs/config.md`` equals :func:`render`; after changing
a section, regenerate it with::

    python -m hapflow.config_doc > docs/config.md
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import typing
from pathlib import Path

from hapflow.cli import COMMANDS
from hapflow.config import NONE_TEXT, config_to_dict
from hapflow.sections import SECTIONS

__all__ = ["field_docs", "readers", "render"]

HEADER = """# The study file: every section and key

Generated from `hapflow/sections/` by `python -m hapflow.config_doc > docs/config.md`; a test
keeps it in sync. A study file is TOML with one table per section. Unknown sections and keys are
errors (with a did-you-mean); types are exact (an integer key given `49152.5` is an error); paths
are relative to the study file's folder; `"none"` means unset. Every command takes `--set
SECTION.KEY=VALUE` for the settings it reads (a key it does not read is an error; "Read by" names,
for a command that reads part of a section, which keys), and saves the resolved settings next
to its outputs.
Rules between sections (checked when a study is loaded): `[loader] length <= [haplotypes]
length`; `[loader] max_shift <= [shard] flank` with `shift_fill = "flank"`; the files each
`[shard] splits` mode needs; the `[model] head` each `[train]` loss term needs.
"""


def field_docs(cls: type) -> dict[str, str]:
    """``{field: docstring}`` of a dataclass whose fields are followed by a string literal."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:], strict=False):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def readers() -> dict[str, list[str]]:
    """``{section: [subcommand, ...]}``: which ``hapflow`` subcommands read each section; one
    that reads only some keys is followed by them, e.g. ``predict (only unphased, ...)``
    (:meth:`hapflow.command.Command.partly`)."""
    out: dict[str, list[str]] = {s: [] for s in SECTIONS}
    for name, module in COMMANDS.items():
        if name == "demo":
            continue  # it runs every stage, so it reads every section
        command = getattr(importlib.import_module(module), "COMMAND", None)
        for section in getattr(command, "reads", ()):
            partly = command.partly(section)
            out[section].append(f"{name} ({partly})" if partly else name)
    return out


_NAMES = {str: "text", int: "integer", float: "number", bool: "boolean"}


def _type_text(annotation) -> str:
    """A type in words: ``integer``, ``list of text``, ``one of "a", "b"``, ``... or none``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return "one of " + ", ".join(f'"{a}"' for a in args)
    if origin in (list, tuple):
        return f"list of {_type_text(args[0])}" if args else "list"
    if origin is dict:
        return f"table of {_type_text(args[1])}" if args else "table"
    if args and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return " or ".join(_type_text(a) for a in rest) + " or none"
    if args:
        return " or ".join(_type_text(a) for a in args)
    return _NAMES.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _default_text(value) -> str:
    if value is None:
        return f'`"{NONE_TEXT}"`'
    text = repr(value).replace("'", '"')
    return f"`{text.lower() if isinstance(value, bool) else text}`"


def render() -> str:
    """The whole of ``docs/config.md``."""
    who = readers()
    parts = [HEADER]
    for section, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        docs = field_docs(cls)
        defaults = config_to_dict(cls(), keep_none=True)
        commands = ", ".join(_command_text(c) for c in who[section]) or "none"
        intro = " ".join((cls.__doc__ or "").split()).replace("``", "`")
        parts.append(f"\n## [{section}]\n\n{intro} Read by: {commands}.\n")
        parts.append("\n| key | type | default | meaning |\n|---|---|---|---|")
        for f in dataclasses.fields(cls):
            kind = _type_text(hints[f.name]) + (" (path)" if f.metadata.get("path") else "")
            meaning = docs.get(f.name, "").replace("``", "`").replace("|", "\\|")
            parts.append(f"| `{f.name}` | {kind} | {_default_text(defaults[f.name])} | "
                         f"{meaning} |")
        parts.append("")
    return "\n".join(parts).rstrip() + "\n"


def _command_text(reader: str) -> str:
    """```hapflow predict``` or ```hapflow predict` (only unphased, ...)``."""
    name, _, partly = reader.partition(" ")
    return f"`hapflow {name}`" + (f" {partly}" if partly else "")


def _path() -> Path:
    return Path(__file__).resolve().parents[1] / "docs" / "config.md"


if __name__ == "__main__":
    print(render(), end="")
