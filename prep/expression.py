"""Prepare a study's expression matrix: ``python -m prep.expression``.

    python -m prep.expression --config configs/demo.toml --workdir work/demo
    python -m prep.expression --config configs/demo.toml --workdir work/demo --n-pcs 3

Reads the ``[expression]`` section of the config (:class:`ExpressionConfig`; any field can be
overridden with ``--field-name value`` or ``--set expression.KEY=VALUE``), then writes

* ``DIR/expression/expression.parquet``: genes × individuals, first column ``gene``;
* ``DIR/expression/config.toml``: the resolved config.

The work is :func:`prep.targets.run_expression`; this module only parses arguments, so
``--help`` imports neither NumPy nor polars.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from typing import Literal

from hapflow.sections import ExpressionConfig

__all__ = ["ExpressionConfig", "main"]


SECTIONS = ("expression",)


def _parser() -> argparse.ArgumentParser:
    from hapflow.cli import add_common_arguments, make_parser

    parser = make_parser(
        "python -m prep.expression",
        "Prepare the study's expression matrix (genes x individuals) from the [expression] "
        "section: writes DIR/expression/expression.parquet and the resolved config.",
        next_step="python -m prep.shard --config C --workdir DIR",
    )
    add_common_arguments(parser, SECTIONS, config_required=False,
                         workdir_help="study working directory (writes DIR/expression)")
    hints = typing.get_type_hints(ExpressionConfig)
    for f in dataclasses.fields(ExpressionConfig):
        kind = hints[f.name]
        choices = typing.get_args(kind) if typing.get_origin(kind) is Literal else None
        parser.add_argument(
            f"--{f.name.replace('_', '-')}",
            dest=f.name,
            default=None,
            choices=choices,
            metavar=None if choices else _METAVARS.get(kind, "VALUE"),
            help=f"override [expression] {f.name} (default: {f.default})",
        )
    return parser


_METAVARS = {int: "N", float: "X", bool: "true|false"}


def _main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from hapflow.cli import setup_logging

    setup_logging(args.quiet, fmt="%(message)s")
    from hapflow.config import load_study, split_overrides

    sets = split_overrides(args.set, SECTIONS)
    for f in dataclasses.fields(ExpressionConfig):
        if getattr(args, f.name) is not None:
            sets["expression"][f.name] = getattr(args, f.name)
    study = load_study(args.config, sets, need=SECTIONS)

    from prep.targets import run_expression

    run_expression(study.expression, args.workdir)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m prep.expression``: see the module docstring; exit 2 on bad input."""
    from hapflow.cli import run_cli

    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
