"""Re-target a study: rewrite its targets table from new expression, never its shards.

Examples
--------
After changing the expression processing (e.g. ``n_pcs``) or the target settings
(``target_reference``, ``target_sets``)::

    python -m prep.expression --config C --workdir DIR --set expression.n_pcs=3   # if needed
    python -m prep.retarget --config C --workdir DIR

(``--expression`` runs the first line's stage too). ``prep.shard`` does the same by itself when
re-run with new expression whose samples are the shards' samples. Only the *values* of the
existing samples may change; dropping or adding samples needs ``python -m prep.shard ...
--overwrite``. What the targets table holds: :mod:`prep.target_table`.
"""

from __future__ import annotations

import sys

from hapflow.command import Call, Command, Keys, Option, run_command

COMMAND = Command(
    prog="python -m prep.retarget",
    summary="Rewrite a study's targets table (DIR/shards/manifest.parquet) from new expression "
            "values; the shards themselves stay.",
    reads=("expression", "shard"),
    keys=(Keys("expression", only=(), unless="expression",
               why="the expression matrix is prepared again only with --expression"),
          Keys("shard", only=("expression", "expression_format", "target_reference",
                              "target_sets", "target_names"),
               why="the shards and their splits stay as built (rebuild them with prep.shard "
                   "--overwrite)")),
    workdir="study working directory (rewrites DIR/shards tables)",
    options=(
        Option("--expression", switch=True,
               help="run the prep.expression stage first (e.g. after changing n_pcs)"),
    ),
    next_step="python -m train.run --config C --workdir DIR",
    doc=None,
)


def run(call: Call) -> None:
    # imported here so that --help stays instant
    from prep.target_table import run_retarget

    summary = run_retarget(call.study, call.workdir, expression=call.args.expression)
    if not call.args.quiet:
        print(f"{summary['samples']} samples, target sets {', '.join(summary['sets'])}: "
              f"{'rewritten' if summary['changed'] else 'unchanged, nothing to do'} in "
              f"{summary['seconds']:.2f} s")


def main(argv: list[str] | None = None) -> int:
    """``python -m prep.retarget``: see the module docstring; exit 2 on bad input."""
    return run_command(COMMAND, run, argv)


if __name__ == "__main__":
    sys.exit(main())
