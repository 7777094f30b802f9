"""The ``hapflow`` command: one subcommand per stage.

::

    hapflow --version
    hapflow expression --config configs/demo.toml --workdir work/demo
    hapflow shard --config configs/demo.toml --workdir work/demo --set shard.shard_samples=512
    hapflow train --config configs/demo.toml --workdir work/demo
    hapflow SUBCOMMAND --help

``python -m hapflow`` is the same command. Each subcommand runs the ``main`` of the stage's own
command module (:data:`COMMANDS`), whose ``python -m`` entry point stays; the dispatch is by
module name, so this module imports no stage. The command modules import only
:mod:`hapflow.command` at the top, so ``hapflow --help`` (which reads each one's summary) and
every ``--help`` are instant.
"""

from __future__ import annotations

import difflib
import importlib
import sys

from hapflow import __version__
from hapflow.names import STAGES

__all__ = ["COMMANDS", "main"]

COMMANDS: dict[str, str] = {
    "expression": "prep.expression",
    "simulate": "prep.simulate",
    "shard": "prep.shard",
    "retarget": "prep.retarget",
    "verify": "prep.verify",
    "enformer-data": "prep.enformer_data",
    "mpra": "prep.mpra",
    "haplotypes": "prep.haplotypes",
    "preview": "loader.preview",
    "train": "train.run",
    "predict": "train.predict",
    "convert-weights": "train.convert_weights",
    "baselines": "analysis.baselines",
    "attribute": "analysis.attribute",
    "evaluate": "analysis.evaluate",
    "demo": "analysis.demo",
}
"""Subcommand -> the command module whose ``COMMAND`` and ``main(argv)`` it runs."""


def summary(name: str) -> str:
    """The one-line summary of subcommand ``name`` (its command module's ``COMMAND``)."""
    return importlib.import_module(COMMANDS[name]).COMMAND.summary


def _usage() -> str:
    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {name:<{width}}  {summary(name)}" for name in COMMANDS)
    return (
        f"usage: hapflow SUBCOMMAND [options]   (hapflow {__version__})\n\n"
        "Fine-tune sequence-to-expression models (Enformer) on personal genomes and "
        "expression.\n\n"
        f"subcommands:\n{rows}\n\n"
        f"A study runs: {' -> '.join(STAGES)}.\n"
        "Every subcommand takes --config STUDY.toml, --workdir DIR (where it reads or writes a "
        "study),\n--set SECTION.KEY=VALUE to override a setting, and --quiet. "
        "'hapflow SUBCOMMAND --help' says more.\n"
        "Start with: hapflow demo --config configs/demo.toml --workdir work/demo\n"
    )


def main(argv: list[str] | None = None) -> int:
    """``hapflow SUBCOMMAND ...``: run that stage's ``main`` with the remaining arguments."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage(), end="")
        return 0 if argv else 2
    if argv[0] in ("-V", "--version", "version"):
        print(f"hapflow {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, list(COMMANDS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        print(f"error: unknown subcommand {name!r}{hint}; one of {', '.join(COMMANDS)}",
              file=sys.stderr)
        return 2
    return importlib.import_module(COMMANDS[name]).main(rest)


if __name__ == "__main__":
    sys.exit(main())
