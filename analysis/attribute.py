"""Variant attribution by in-silico mutagenesis over personal variants: ``python -m
analysis.attribute``.

Examples
--------
The demo study, a run trained with ``python -m train.run``::

    python -m analysis.attribute --config configs/demo.toml --workdir work/demo \\
        --run pairwise_regression --gene TANGO2 --split test --max-individuals 10
    python -m analysis.attribute --config configs/demo.toml --workdir work/demo \\
        --run pairwise_regression --gene ENSG00000183597 --individuals HG00096,HG00097

Reads the ``[haplotypes]`` and ``[attribute]`` sections; ``--set section.key=value`` overrides
any setting. What is computed and written (``DIR/attribution/RUN/GENE.*``): see
:mod:`analysis.attribution`.
"""

from __future__ import annotations

import sys

from hapflow.command import Call, Command, Keys, Option, run_command

COMMAND = Command(
    prog="python -m analysis.attribute",
    summary="In-silico mutagenesis over personal variants: the change in a fine-tuned model's "
            "prediction when each variant an individual carries in a gene's window is reverted "
            "to the reference allele; ranked over a set of individuals and compared with the "
            "elastic net's weights.",
    reads=("haplotypes", "attribute"),
    keys=(Keys("haplotypes", only=("reference", "vcf", "tss"),
               why="a run's windows are made as its training windows were "
                   "(DIR/runs/RUN/data.json)"),),
    workdir="study folder (reads DIR/runs/RUN, writes DIR/attribution/RUN)",
    options=(
        Option("--run", required=True, help="the fine-tuned run DIR/runs/RUN"),
        Option("--gene", required=True, help="gene id (version optional) or symbol"),
        Option("--individuals", help="comma-separated VCF samples (not with --split)"),
        Option("--split", metavar="SPLIT", setting="attribute.split",
               help="the gene's individuals of this split: train, val or test (overrides "
                    "[attribute] split; not with --individuals)"),
        Option("--max-individuals", type=int, metavar="N", setting="attribute.max_individuals",
               help="override [attribute] max_individuals (0: all of the split)"),
        Option("--batch-size", type=int, metavar="N", setting="attribute.batch_size",
               help="override [attribute] batch_size"),
        Option("--device", setting="attribute.device",
               help="override [attribute] device (auto, cpu, cuda)"),
    ),
    next_step="read DIR/attribution/RUN/GENE.parquet and GENE.png",
    doc=None,
)


def run(call: Call) -> None:
    # imported here so that --help stays instant
    from analysis.attribution import run_attribution
    from analysis.personal_variants import AttributionError

    args = call.args
    if args.individuals is not None and args.split is not None:
        raise AttributionError("give --individuals or --split, not both")
    people = [s for s in args.individuals.split(",") if s] if args.individuals else None
    if args.individuals is not None and not people:
        raise AttributionError("--individuals names no individual")
    run_attribution(call.study, call.workdir, args.run, args.gene, individuals=people)


def main(argv: list[str] | None = None) -> int:
    """``python -m analysis.attribute``: see the module docstring; exit 2 on bad input."""
    return run_command(COMMAND, run, argv)


if __name__ == "__main__":
    sys.exit(main())
