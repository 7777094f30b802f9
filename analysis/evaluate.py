"""Score predictors per gene across held-out individuals: ``python -m analysis.evaluate``.

Examples
--------
After ``prep.shard`` and one or more predictors (``train.predict``, ``analysis.baselines``)::

    python -m analysis.evaluate --config configs/demo.toml --workdir work/demo
    python -m analysis.evaluate --config configs/demo.toml --workdir work/demo \\
        --predictions ridge lasso --split test --target Y

Reads the ``[evaluate]`` section; ``--set evaluate.key=value`` overrides any setting. What is
measured: see :mod:`analysis.evaluation`; what is written (``DIR/report`` or ``--out``:
per_gene.parquet, summary.parquet, paired.parquet, coverage.parquet, PNG figures, report.html
and config.toml): see :mod:`analysis.report`.
"""

from __future__ import annotations

import logging
import sys

from hapflow.command import Call, Command, Option, run_command

COMMAND = Command(
    prog="python -m analysis.evaluate",
    summary="Per-gene correlation of predictors with observed expression across held-out "
            "individuals, summaries, comparisons and a self-contained HTML report "
            "(DIR/report/report.html).",
    reads=("evaluate",),
    workdir="study working directory (reads DIR/shards and DIR/predictions, writes DIR/report)",
    options=(
        Option("--predictions", nargs="+", metavar="NAME", setting="evaluate.predictions",
               help="predictors to evaluate (default: all with the split's parquet)"),
        Option("--split", setting="evaluate.split",
               help="override [evaluate] split (default test)"),
        Option("--target", choices=("Y", "Z"), setting="evaluate.target",
               help="override [evaluate] target"),
        Option("--gene-classes", setting="evaluate.gene_classes",
               help="override [evaluate] gene_classes (gene,class table)"),
        Option("--out", help="output folder (default DIR/report)"),
    ),
    next_step="open DIR/report/report.html in a browser",
    doc=None,
)


def run(call: Call) -> None:
    # imported here so that --help stays instant
    from analysis.evaluation import headline
    from analysis.report import run_evaluation

    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    result, html = run_evaluation(call.study, call.workdir, call.args.out)
    print(headline(result, html))


def main(argv: list[str] | None = None) -> int:
    """``python -m analysis.evaluate``: see the module docstring; exit 2 on bad input."""
    return run_command(COMMAND, run, argv)


if __name__ == "__main__":
    sys.exit(main())
