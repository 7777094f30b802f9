"""Prepare a study's expression matrix: ``python -m prep.expression``.

Examples
--------
::

    python -m prep.expression --config configs/demo.toml --workdir work/demo
    python -m prep.expression --config configs/demo.toml --workdir work/demo --n-pcs 3

Reads the ``[expression]`` section (every setting can be overridden with its own flag or
``--set expression.KEY=VALUE``), then writes

* ``DIR/expression/expression.parquet``: genes x individuals, first column ``gene``;
* ``DIR/expression/config.toml``: the resolved settings.

The work is :func:`prep.targets.run_expression`.
"""

from __future__ import annotations

import sys

from hapflow.command import Call, Command, Option, run_command

COMMAND = Command(
    prog="python -m prep.expression",
    summary="Prepare the study's expression matrix (genes x individuals) from the [expression] "
            "section: writes DIR/expression/expression.parquet and the resolved config.",
    reads=("expression",),
    config="optional",
    workdir="study working directory (writes DIR/expression)",
    options=(
        Option("--input", metavar="FILE", setting="expression.input",
               help="override [expression] input (default: None)"),
        Option("--format", choices=("auto", "matrix", "bed", "geuvadis_rpkm"),
               setting="expression.format", help="override [expression] format (default: auto)"),
        Option("--process", choices=("none", "geuvadis"), setting="expression.process",
               help="override [expression] process (default: none)"),
        Option("--n-pcs", metavar="N", setting="expression.n_pcs",
               help="override [expression] n_pcs (default: 10)"),
        Option("--min-nonzero-fraction", metavar="X", setting="expression.min_nonzero_fraction",
               help="override [expression] min_nonzero_fraction (default: 0.5)"),
        Option("--pseudocount", metavar="X", setting="expression.pseudocount",
               help="override [expression] pseudocount (default: 0.01)"),
        Option("--log1p", metavar="true|false", setting="expression.log1p",
               help="override [expression] log1p (default: False)"),
    ),
    next_step="python -m prep.shard --config C --workdir DIR",
    doc=None,
)


def run(call: Call) -> None:
    # imported here so that --help stays instant
    from prep.targets import run_expression

    run_expression(call.study, call.workdir)


def main(argv: list[str] | None = None) -> int:
    """``python -m prep.expression``: see the module docstring; exit 2 on bad input."""
    return run_command(COMMAND, run, argv)


if __name__ == "__main__":
    sys.exit(main())
