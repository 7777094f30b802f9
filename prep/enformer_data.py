"""Convert Enformer's own training data (Basenji2 TFRecords) into shards: ``python -m
prep.enformer_data``.

Examples
--------
The human and mouse folders of gs://basenji_barnyard/data, with their genome builds::

    python -m prep.enformer_data --config study.toml --workdir work/study

where the study file holds::

    [enformer_data]
    human = "basenji/human"              # statistics.json, sequences.bed, tfrecords/*.tfr
    human_reference = "ref/hg38.fa.gz"   # bgzip + .fai + .gzi
    mouse = "basenji/mouse"
    mouse_reference = "ref/mm10.fa.gz"

One part of eight, e.g. as a SLURM array task (the union of all parts equals one run)::

    python -m prep.enformer_data --config study.toml --workdir work/study --part 3/8

Only the validation records, 16 per shard::

    python -m prep.enformer_data --config study.toml --workdir work/study \\
        --set enformer_data.splits=val --samples-per-shard 16

Reads ``[enformer_data]`` (and ``[haplotypes] reference`` when ``human_reference`` is unset).
Output layout and conventions: see :mod:`prep.enformer_build`; shard members:
:mod:`prep.enformer_format`.
"""

from __future__ import annotations

import sys

from hapflow.command import Call, Command, Keys, Option, run_command

COMMAND = Command(
    prog="python -m prep.enformer_data",
    summary="Convert Enformer's own training data (Basenji2 TFRecords: human and mouse "
            "records with their targets) into shards for joint training (DIR/enformer_data).",
    reads=("enformer_data", "haplotypes"),
    keys=(Keys("haplotypes", only=("reference",),
               why="Enformer's records are reference sequences: [haplotypes] reference is the "
                   "human FASTA when [enformer_data] human_reference is not set"),),
    workdir="study working directory (writes DIR/enformer_data)",
    options=(
        Option("--part", metavar="K/N", help="convert only part K of N of the TFRecord files, "
               "e.g. 2/8 (for job arrays; the last part to finish writes meta.json)"),
        Option("--overwrite", switch=True,
               help="rebuild shards of another build instead of stopping"),
        Option("--workers", type=int, metavar="N", setting="enformer_data.workers",
               help="TFRecord files read at once, integer (default: [enformer_data] workers; "
                    "0: all cores)"),
        Option("--human", metavar="DIR", setting="enformer_data.human",
               help="override [enformer_data] human (Basenji2 human folder)"),
        Option("--mouse", metavar="DIR", setting="enformer_data.mouse",
               help="override [enformer_data] mouse (Basenji2 mouse folder)"),
        Option("--samples-per-shard", type=int, metavar="N",
               setting="enformer_data.samples_per_shard",
               help="override [enformer_data] samples_per_shard, integer"),
    ),
    next_step="python -m prep.mpra --config C --workdir DIR (MPRA effects), then "
              "python -m train.run --config C --workdir DIR",
    doc=None,
)


def run(call: Call) -> None:
    # the library (numpy, numba, polars, pysam) is imported here so that --help stays instant
    from prep.enformer_build import run_enformer_data
    from prep.sharding import parse_part

    run_enformer_data(call.study, call.workdir, parse_part(call.args.part), call.args.overwrite)


def main(argv: list[str] | None = None) -> int:
    """``python -m prep.enformer_data``: see the module docstring; exit 2 on bad input."""
    return run_command(COMMAND, run, argv)


if __name__ == "__main__":
    sys.exit(main())
