"""Predict expression with a trained model: ``python -m train.predict`` (or under torchrun).

Examples
--------
The test individuals of the demo study, with the run ``pairwise_regression``::

    python -m train.predict --config configs/demo.toml --workdir work/demo \\
        --run pairwise_regression --split test

New people, straight from their VCF (no shards needed); a partly phased VCF needs an unphased
policy (the default is the run's: its training windows' [haplotypes] unphased)::

    python -m train.predict --config configs/demo.toml --workdir work/demo \\
        --run pairwise_regression --vcf people.vcf.gz --reference GRCh37.fa.gz \\
        --tss genes.tsv [--samples NA12878,NA12891] [--unphased random --set haplotypes.seed=1]

The pretrained, not fine-tuned, Enformer (CAGE GM12878 track over the centre bins)::

    python -m train.predict --config configs/geuvadis.toml --workdir DIR --weights enformer/

Under torchrun (every sample exactly once over all processes), name the run with
``--run-name`` (torchrun would take ``--run`` for its own ``--run-path``)::

    torchrun --nproc-per-node 8 -m train.predict --config C --workdir DIR --run-name RUN

Strands follow the run: forward and reverse-complement predictions are averaged when it was
trained with reverse complements ([loader] rc_prob > 0) and validated on their average ([train]
val_rc_average), forward only otherwise; ``--rc`` / ``--no-rc`` decide instead.

Writes ``DIR/predictions/NAME/SPLIT.parquet`` (or ``vcf.parquet``): gene, individual,
prediction_forward, prediction_rc, prediction; and ``SPLIT.json`` (``vcf.json``) beside it: the
strands used and why, and from a VCF the haplotype policies and the genotypes they touched.
Next: ``python -m analysis.evaluate``.
"""

from __future__ import annotations

import sys

from hapflow.command import Call, Command, Keys, Option, run_command

RUN_WINDOWS = ("a run's windows are made as its training windows were "
               "(DIR/runs/RUN/data.json); the new people's unphased and REF policies may be set")

COMMAND = Command(
    prog="python -m train.predict",
    summary="Predict expression per (gene, individual) with a fine-tuned model, from the "
            "study's shards or from a VCF; writes DIR/predictions/NAME/.",
    reads=("haplotypes", "loader", "model"),
    keys=(
        Keys("haplotypes", only=("unphased", "ref_mismatch", "seed"), why=RUN_WINDOWS),
        Keys("haplotypes", only=(), unless="vcf",
             why="a split's windows are in the shards, made when they were built"),
        Keys("loader", only=("batch_size", "num_workers", "prefetch_factor", "pin_memory",
                             "keep_freed_memory", "worker_start", "timeout_s", "verify",
                             "on_error", "length"),
             why="prediction reads every sample once, forward (the training-only settings "
                 "do not apply)"),
        Keys("loader", skips=("length",), when="run",
             why="the windows are as long as the run's model reads"),
        Keys("model", only=("track", "n_bins", "use_tf_gamma", "haplotypes"),
             why="a run predicts with its exported model (DIR/runs/RUN/model.json), --weights "
                 "with the pretrained trunk and its track head"),
        Keys("model", only=(), when="run",
             why="a run predicts with its exported model (DIR/runs/RUN/model.json)"),
    ),
    workdir="study folder (DIR/runs, DIR/predictions)",
    options=(
        Option("--run", "--run-name", dest="run",
               help="the fine-tuned run DIR/runs/RUN (under torchrun write --run-name: "
                    "torchrun reads --run as its own --run-path)"),
        Option("--weights", help="instead of --run: pretrained Enformer weights folder"),
        Option("--split", default="test", choices=("train", "val", "test"),  # hapflow.names.SPLITS
               help="split of the shards to predict"),
        Option("--vcf", help="predict everyone in this VCF instead of a split (one "
                             "file, a comma-separated list, or a pattern with {chrom})"),
        Option("--reference", help="with --vcf: the reference FASTA"),
        Option("--tss", help="with --vcf: the gene TSS table"),
        Option("--samples", help="with --vcf: comma-separated samples (default: all)"),
        Option("--unphased", choices=("error", "reference", "as-phased", "random"),
               setting="haplotypes.unphased",
               help="with --vcf: unphased heterozygous genotypes: stop (error), reference, "
                    "as-phased or random (seed: --set haplotypes.seed=N); default: the run's"),
        Option("--ref-mismatch", choices=("error", "skip"), setting="haplotypes.ref_mismatch",
               help="with --vcf: a REF disagreeing with the FASTA: stop (error) or skip the "
                    "record; default: the run's"),
        Option("--device", default="auto", help="auto, cpu, cuda or cuda:N"),
        Option("--rc", switch=True, default=None,
               help="average forward and reverse-complement predictions (default: as the run "
                    "was trained and validated)"),
        Option("--no-rc", switch=True,
               help="forward strand only (default: as the run was trained and validated)"),
    ),
    next_step="python -m analysis.evaluate --config C --workdir DIR",
    doc=None,
)


def run(call: Call) -> None:
    # imported here so that --help stays instant
    from train.prediction import run_predict

    args = call.args
    if args.rc and args.no_rc:
        raise ValueError("give --rc or --no-rc, not both")
    samples = [s for s in args.samples.split(",") if s] if args.samples else None
    vcf = args.vcf.split(",") if args.vcf and "," in args.vcf else args.vcf
    rc = True if args.rc else False if args.no_rc else None
    run_predict(call.study, call.workdir, run=args.run, weights=args.weights,
                split=args.split, vcf=vcf, reference=args.reference, tss=args.tss,
                samples=samples, device=args.device, rc=rc,
                haplotypes=call.given("haplotypes"), loader=call.given("loader"))


def main(argv: list[str] | None = None) -> int:
    """``python -m train.predict``: see the module docstring; exit 2 on bad input."""
    return run_command(COMMAND, run, argv)


if __name__ == "__main__":
    sys.exit(main())
