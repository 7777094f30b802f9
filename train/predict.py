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

import argparse
import contextlib
import os
import sys


def parse_args(argv=None) -> argparse.Namespace:
    from hapflow.cli import add_common_arguments, make_parser

    p = make_parser("python -m train.predict",
                    "Predict expression per (gene, individual) with a fine-tuned model, from "
                    "the study's shards or from a VCF; writes DIR/predictions/NAME/.",
                    next_step="python -m analysis.evaluate --config C --workdir DIR")
    add_common_arguments(p, ("haplotypes", "loader", "model"),
                         workdir_help="study folder (DIR/runs, DIR/predictions)")
    p.add_argument("--run", "--run-name", dest="run",
                   help="the fine-tuned run DIR/runs/RUN (under torchrun write --run-name: "
                        "torchrun reads --run as its own --run-path)")
    p.add_argument("--weights", help="instead of --run: pretrained Enformer weights folder")
    p.add_argument("--split", default="test", choices=("train", "val", "test"),
                   help="split of the shards to predict")
    p.add_argument("--vcf", help="predict everyone in this phased VCF instead of a split (one file, a comma-separated list, or a pattern with {chrom})")
    p.add_argument("--reference", help="with --vcf: the reference FASTA")
    p.add_argument("--tss", help="with --vcf: the gene TSS table")
    p.add_argument("--samples", help="with --vcf: comma-separated samples (default: all)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--no-rc", action="store_true",
                   help="forward strand only (default: average forward and reverse complement)")
    return p.parse_args(argv)


def _main(argv=None) -> int:
    args = parse_args(argv)
    from hapflow.cli import setup_logging

    setup_logging(args.quiet, fmt="%(asctime)s %(levelname)s %(message)s",
                  rank=int(os.environ.get("RANK", "0")), datefmt="%H:%M:%S")
    from hapflow.config import load_study, split_overrides
    from train.prediction import run_predict

    sets = split_overrides(args.set, ("haplotypes", "loader", "model"))
    study = load_study(args.config, sets)  # the whole study file, checked before any work
    samples = [s for s in args.samples.split(",") if s] if args.samples else None
    vcf = args.vcf.split(",") if args.vcf and "," in args.vcf else args.vcf
    with _resolved(args.config, study, bool(args.set), args.workdir) as config:
        run_predict(config, args.workdir, run=args.run, weights=args.weights,
                    split=args.split, vcf=vcf, reference=args.reference, tss=args.tss,
                    samples=samples, device=args.device, rc_average=not args.no_rc)
    return 0


@contextlib.contextmanager
def _resolved(config, study, overridden: bool, workdir):
    """The study file to read: ``config``, or with --set a temporary resolved copy."""
    if not overridden:
        yield config
        return
    import tempfile
    from pathlib import Path

    Path(workdir).mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".study.", suffix=".toml", dir=workdir)
    os.close(fd)
    try:
        study.save(tmp)
        yield tmp
    finally:
        os.unlink(tmp)


def main(argv=None) -> int:
    """``python -m train.predict``: see the module docstring; exit 2 on bad input."""
    from hapflow.cli import run_cli

    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
