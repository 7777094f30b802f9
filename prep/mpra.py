"""Convert MPRA variant-effect tables into shards: ``python -m prep.mpra``.

Examples
--------
Siraj et al.'s tables (Tewhey lab MPRAmodel output, one per cell type; columns and sign
convention in :mod:`prep.mpra_data`)::

    python -m prep.mpra --config study.toml --workdir work/study

where the study file holds::

    [mpra]
    tables = ["mpra/K562.tsv.gz", "mpra/HepG2.tsv.gz", "mpra/GM12878.tsv.gz",
              "mpra/SK-N-SH.tsv.gz", "mpra/A549.tsv.gz"]
    cell_types = ["K562", "HepG2", "GM12878", "SK-N-SH", "A549"]

Another split seed, and effects divided by their sd without centring (0 stays "no effect")::

    python -m prep.mpra --config study.toml --workdir work/study --seed 1 \\
        --set mpra.normalise=scale

Reads ``[mpra]``. Every stored effect is alt - ref (Log2Skew). Output layout: see
:mod:`prep.mpra_build`; shard members: :mod:`prep.mpra_format`.
"""

from __future__ import annotations

import sys

from hapflow.command import Call, Command, Option, run_command

COMMAND = Command(
    prog="python -m prep.mpra",
    summary="Convert MPRA variant-effect tables (one per cell type: oligo pairs and Log2Skew) "
            "into shards for joint training (DIR/mpra): oligos joined across cell types, "
            "effects (alt - ref) normalised per cell type and masked where not measured, "
            "variants split 90/5/5.",
    reads=("mpra",),
    workdir="study working directory (writes DIR/mpra)",
    options=(
        Option("--seed", type=int, metavar="N", setting="mpra.seed",
               help="override [mpra] seed (the variants' split), integer"),
        Option("--normalise", choices=("zscore", "scale", "none"), setting="mpra.normalise",
               help="override [mpra] normalise"),
    ),
    next_step="python -m train.run --config C --workdir DIR",
    doc=None,
)


def run(call: Call) -> None:
    # the library (numpy, polars) is imported here so that --help stays instant
    from prep.mpra_build import run_mpra

    run_mpra(call.study, call.workdir)


def main(argv: list[str] | None = None) -> int:
    """``python -m prep.mpra``: see the module docstring; exit 2 on bad input."""
    return run_command(COMMAND, run, argv)


if __name__ == "__main__":
    sys.exit(main())
