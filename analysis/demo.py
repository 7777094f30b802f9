"""The whole path on one study, one command: ``python -m analysis.demo``.

Examples
--------
On the bundled real chr22 data (1000 Genomes genotypes, GEUVADIS expression)::

    python -m analysis.demo --config configs/demo.toml --workdir work/demo

With a setting changed for every stage that reads it::

    python -m analysis.demo --config configs/demo.toml --workdir work/demo2 \\
        --set train.epochs=1

Runs every stage's own command line in order (expression, shards, fine-tuning, test
predictions, variant baselines, variant attribution, evaluation and report) and prints where
the report is and the headline numbers; see :mod:`analysis.whole_path`. A re-run resumes.
"""

from __future__ import annotations

import sys

from hapflow.command import Call, Command, Option, run_command
from hapflow.sections import SECTIONS  # the demo reads every section (no stage code: instant)

COMMAND = Command(
    prog="python -m analysis.demo",
    summary="Run the whole hapflow path on a study: expression, shards, fine-tuning, "
            "predictions, variant baselines, variant attribution, evaluation and the HTML "
            "report.",
    reads=tuple(SECTIONS),
    workdir="study folder for every output; each stage gets the --set overrides of the "
            "sections it reads",
    options=(
        Option("--name", default="demo", help="training run name"),
    ),
    next_step="open DIR/report/report.html; then try a study of your own "
              "(configs/geuvadis.toml)",
    doc=None,
)


def run(call: Call) -> int:
    # imported here so that --help stays instant
    from analysis.whole_path import run_demo

    args = call.args
    return run_demo(call.study, call.workdir, args.config, args.set, args.name, args.quiet)


def main(argv: list[str] | None = None) -> int:
    """``python -m analysis.demo``: see the module docstring; exit 2 on bad input."""
    return run_command(COMMAND, run, argv)


if __name__ == "__main__":
    sys.exit(main())
