"""The whole path on one study, one command: ``python -m analysis.demo``.

On the bundled real chr22 data (1000 Genomes genotypes, GEUVADIS expression)::

    python -m analysis.demo --config configs/demo.toml --workdir work/demo

runs, in order, each stage's own command line (so the demo exercises exactly what users run):

1. ``prep.expression``  log expression per gene and individual  -> DIR/expression/
2. ``prep.shard``       personal haplotype windows + targets     -> DIR/shards/
3. ``train.run``        fine-tune (a tiny Enformer on CPU)       -> DIR/runs/demo/
4. ``train.predict``    predictions for the test individuals     -> DIR/predictions/demo/
5. ``analysis.baselines``  elastic net, LASSO, ridge, top SNP on the same window
                                                                 -> DIR/predictions/NAME/
6. ``analysis.attribute``  in-silico reversion of the personal variants of one test gene
                           (8 test individuals), against the elastic net's weights
                                                                 -> DIR/attribution/demo/
7. ``analysis.evaluate``   per-gene r, summaries, report.html (with the attribution)
                                                                 -> DIR/report/

and prints where the report is and the headline numbers. The attributed gene is chosen from the
data (:func:`attribution_gene`): of the genes with test individuals that the elastic net weighs
(at least 3 non-zero weights, when any), the one with the most variants in the model's window.
A re-run resumes: finished shards are kept (same build), a finished run is not retrained.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from hapflow.config import SECTIONS

log = logging.getLogger("demo")


def parse_args(argv=None) -> argparse.Namespace:
    from hapflow.cli import add_common_arguments, make_parser

    p = make_parser("python -m analysis.demo",
                    "Run the whole hapflow path on a study: expression, shards, fine-tuning, "
                    "predictions, variant baselines, variant attribution, evaluation and the "
                    "HTML report.",
                    next_step="open DIR/report/report.html; then try a study of your own "
                              "(configs/geuvadis.toml)")
    add_common_arguments(p, tuple(SECTIONS), workdir_help="study folder for every output; "
                         "with --set, the resolved study is saved as DIR/study.toml and every "
                         "stage reads that")
    p.add_argument("--name", default="demo", help="training run name")
    return p.parse_args(argv)


MIN_EN_WEIGHTS = 3
"""Non-zero elastic-net weights a gene needs to be preferred for the demo's attribution (the
correlation with the elastic net needs 3 shared variants)."""


def attribution_gene(workdir: str, split: str = "test") -> str:
    """The gene the demo attributes, chosen from the study's own outputs.

    Of the genes with ``split`` individuals in ``DIR/shards/manifest.parquet``, the one with the
    most variants in the model's window by the elastic net's count
    (``DIR/predictions/elastic_net/genes.parquet``, column n_variants: the variants with MAF >=
    ``[baselines] min_maf`` among training individuals inside the window the baselines were
    given, the loader's crop in the demo), among the genes the elastic net gave at least
    :data:`MIN_EN_WEIGHTS` non-zero weights (so that attribution and elastic net can be
    correlated) when there are any; ties go to more non-zero weights, then to the smaller gene
    id. Returns the gene id as the manifest writes it.

    Raises
    ------
    AttributionError
        A table is missing or unreadable, or no gene of ``split`` has variants in its window.
    """
    import polars as pl

    from analysis.attribute import AttributionError
    from hapflow.layout import Workdir

    layout = Workdir(workdir)
    manifest = layout.shards / "manifest.parquet"
    genes_path = layout.predictions / "elastic_net" / "genes.parquet"
    try:
        split_genes = (pl.read_parquet(manifest, columns=["gene", "split"])
                       .filter(pl.col("split") == split).select("gene").unique())
        counts = pl.read_parquet(genes_path, columns=["gene", "n_variants", "n_nonzero"])
    except (OSError, pl.exceptions.PolarsError) as err:
        raise AttributionError(f"cannot choose the gene to attribute ({err}); run the shards "
                               "(python -m prep.shard) and the elastic net (python -m "
                               "analysis.baselines) first") from None
    weighed = (pl.col("n_nonzero") >= MIN_EN_WEIGHTS).alias("weighed")
    ranked = (counts.join(split_genes, on="gene", how="semi").filter(pl.col("n_variants") > 0)
              .with_columns(weighed)
              .sort(["weighed", "n_variants", "n_nonzero", "gene"],
                    descending=[True, True, True, False]))
    if ranked.height == 0:
        raise AttributionError(f"{genes_path}: no gene with {split} individuals in {manifest} "
                               "has variants in its window; nothing to attribute")
    return ranked["gene"][0]


def run_demo(config: str, workdir: str, name: str = "demo", quiet: bool = False) -> int:
    """Run the stages in order; stop at the first that fails. Returns its exit code (0: all
    done)."""
    from hapflow.config import load_config
    from hapflow.layout import Workdir
    from hapflow.sections import LoaderConfig

    common = ["--config", config, "--workdir", workdir] + (["--quiet"] if quiet else [])
    layout = Workdir(workdir)
    window = load_config(LoaderConfig, config, "loader").length
    resume = ["--resume"] if (layout.runs / name / "checkpoints" / "latest").exists() else []
    stages = [
        ("log expression", "prep.expression", []),
        ("personal haplotype shards", "prep.shard", []),
        ("fine-tuning", "train.run", ["--name", name, *resume]),
        ("test predictions", "train.predict", ["--run", name, "--split", "test"]),
        # the baselines see the variants of the model's window (the loader's crop, if any)
        ("variant baselines", "analysis.baselines",
         ["--length", str(window)] if window else []),
        # one test gene, chosen from the baselines' counts once they exist; 8 people keep it short
        ("variant attribution", "analysis.attribute",
         lambda: ["--run", name, "--gene", attribution_gene(workdir), "--split", "test",
                  "--max-individuals", "8"]),
        ("evaluation and report", "analysis.evaluate", []),
    ]
    started = time.monotonic()
    for i, (what, module, extra) in enumerate(stages, 1):
        log.info("[%d/%d] %s: python -m %s", i, len(stages), what, module)
        t0 = time.monotonic()
        main = __import__(module, fromlist=["main"]).main
        code = main(common + (extra() if callable(extra) else extra))
        if code:
            log.error("The demo stopped at step %d (%s): python -m %s exited with %d", i, what,
                      module, code)
            return code
        log.info("      done in %.0f s", time.monotonic() - t0)
    log.warning("The whole path took %.1f minutes", (time.monotonic() - started) / 60)
    return 0


def _main(argv=None) -> int:
    args = parse_args(argv)
    from hapflow.cli import setup_logging

    setup_logging(args.quiet, fmt="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    from pathlib import Path

    from hapflow.config import load_study, split_overrides

    sets = split_overrides(args.set)
    study = load_study(args.config, sets)  # the whole study file, checked before any stage
    config = args.config
    if args.set:  # one resolved file for every stage, kept with the outputs
        config = str(Path(args.workdir) / "study.toml")
        study.save(config)
    return run_demo(config, args.workdir, args.name, args.quiet)


def main(argv=None) -> int:
    """``python -m analysis.demo``: see the module docstring; exit 2 on bad input."""
    from hapflow.cli import run_cli

    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
