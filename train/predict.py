"""Predict expression with a trained model: ``python -m train.predict`` (or under torchrun).

Examples
--------
The test individuals of the demo study, with the run ``pairwise_regression``::

    python -m train.predict --config configs/demo.toml --workdir work/demo \\
        --run pairwise_regression --split test

New people, straight from their phased VCF (no shards needed)::

    python -m train.predict --config configs/demo.toml --workdir work/demo \\
        --run pairwise_regression --vcf people.vcf.gz --reference GRCh37.fa.gz \\
        --tss genes.tsv [--samples NA12878,NA12891]

The pretrained, not fine-tuned, Enformer (CAGE GM12878 track over the centre bins)::

    python -m train.predict --config configs/geuvadis.toml --workdir DIR --weights enformer/

Under torchrun (every sample exactly once over all processes), name the run with
``--run-name`` (torchrun would take ``--run`` for its own ``--run-path``)::

    torchrun --nproc-per-node 8 -m train.predict --config C --workdir DIR --run-name RUN

Writes ``DIR/predictions/NAME/SPLIT.parquet`` (or ``vcf.parquet``): gene, individual,
prediction_forward, prediction_rc, prediction. Next: ``python -m analysis.evaluate``.
"""

from __future__ import annotations

import sys

from hapflow.command import Call, Command, Option, run_command

COMMAND = Command(
    prog="python -m train.predict",
    summary="Predict expression per (gene, individual) with a fine-tuned model, from the "
            "study's shards or from a VCF; writes DIR/predictions/NAME/.",
    reads=("haplotypes", "loader", "model"),
    workdir="study folder (DIR/runs, DIR/predictions)",
    options=(
        Option("--run", "--run-name", dest="run",
               help="the fine-tuned run DIR/runs/RUN (under torchrun write --run-name: "
                    "torchrun reads --run as its own --run-path)"),
        Option("--weights", help="instead of --run: pretrained Enformer weights folder"),
        Option("--split", default="test", choices=("train", "val", "test"),  # hapflow.names.SPLITS
               help="split of the shards to predict"),
        Option("--vcf", help="predict everyone in this phased VCF instead of a split (one "
                             "file, a comma-separated list, or a pattern with {chrom})"),
        Option("--reference", help="with --vcf: the reference FASTA"),
        Option("--tss", help="with --vcf: the gene TSS table"),
        Option("--samples", help="with --vcf: comma-separated samples (default: all)"),
        Option("--device", default="auto", help="auto, cpu, cuda or cuda:N"),
        Option("--no-rc", switch=True,
               help="forward strand only (default: average forward and reverse complement)"),
    ),
    next_step="python -m analysis.evaluate --config C --workdir DIR",
    doc=None,
)


def run(call: Call) -> None:
    # imported here so that --help stays instant
    from train.prediction import run_predict

    args = call.args
    samples = [s for s in args.samples.split(",") if s] if args.samples else None
    vcf = args.vcf.split(",") if args.vcf and "," in args.vcf else args.vcf
    run_predict(call.study, call.workdir, run=args.run, weights=args.weights,
                split=args.split, vcf=vcf, reference=args.reference, tss=args.tss,
                samples=samples, device=args.device, rc_average=not args.no_rc)


def main(argv: list[str] | None = None) -> int:
    """``python -m train.predict``: see the module docstring; exit 2 on bad input."""
    return run_command(COMMAND, run, argv)


if __name__ == "__main__":
    sys.exit(main())
