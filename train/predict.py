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
import logging
import os
import sys


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m train.predict",
        description="Predict expression per (gene, individual) with a fine-tuned model, from "
                    "the study's shards or from a VCF. Next step: python -m analysis.evaluate.")
    p.add_argument("--config", required=True, help="study TOML")
    p.add_argument("--workdir", required=True, help="study folder (DIR/runs, DIR/predictions)")
    p.add_argument("--run", "--run-name", dest="run",
                   help="the fine-tuned run DIR/runs/RUN (under torchrun write --run-name: "
                        "torchrun reads --run as its own --run-path)")
    p.add_argument("--weights", help="instead of --run: pretrained Enformer weights folder")
    p.add_argument("--split", default="test", choices=("train", "val", "test"),
                   help="split of the shards to predict (default: test)")
    p.add_argument("--vcf", help="predict everyone in this phased VCF instead of a split (one file, a comma-separated list, or a pattern with {chrom})")
    p.add_argument("--reference", help="with --vcf: the reference FASTA")
    p.add_argument("--tss", help="with --vcf: the gene TSS table")
    p.add_argument("--samples", help="with --vcf: comma-separated samples (default: all)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    p.add_argument("--no-rc", action="store_true",
                   help="forward strand only (default: average forward and reverse complement)")
    p.add_argument("--quiet", action="store_true", help="only warnings and errors")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.WARNING if args.quiet or rank else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    from prep.config import ConfigError
    from prep.shard_format import ShardFormatError
    from prep.variants import VcfError
    from train.prediction import PredictError, run_predict
    from train.weights import WeightsError

    samples = [s for s in args.samples.split(",") if s] if args.samples else None
    vcf = args.vcf.split(",") if args.vcf and "," in args.vcf else args.vcf
    try:
        run_predict(args.config, args.workdir, run=args.run, weights=args.weights,
                    split=args.split, vcf=vcf, reference=args.reference, tss=args.tss,
                    samples=samples, device=args.device, rc_average=not args.no_rc)
    except (ConfigError, PredictError, WeightsError, ShardFormatError, VcfError, ValueError,
            FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
