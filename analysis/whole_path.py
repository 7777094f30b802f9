"""The whole path on one study, run by ``python -m analysis.demo``.

:func:`run_demo` runs each stage's own command line (so the demo exercises exactly what users
run), in the order of :data:`hapflow.names.STAGES`, each stage the command module that
``hapflow SUBCOMMAND`` runs (:data:`hapflow.cli.COMMANDS`):

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

Each stage gets the study file, the workdir and the ``--set`` overrides of the settings it
reads (its ``COMMAND.reads`` and ``COMMAND.keys``), so an override reaches every stage that
uses it; no resolved copy of the study is written. The attributed gene is chosen from the data
(:func:`attribution_gene`): of the genes with test individuals that the elastic net weighs (at
least 3 non-zero weights, when any), the one with the most variants in the model's window. A
re-run resumes: finished shards are kept (same build), a finished run is not retrained.
"""

from __future__ import annotations

import importlib
import logging
import os
import time
from collections.abc import Sequence

import polars as pl

from analysis.personal_variants import AttributionError
from hapflow.cli import COMMANDS
from hapflow.command import build_parser
from hapflow.config import ConfigError, StudyConfig
from hapflow.layout import Workdir
from hapflow.names import STAGES

__all__ = ["MIN_EN_WEIGHTS", "attribution_gene", "run_demo"]

log = logging.getLogger("demo")

MIN_EN_WEIGHTS = 3
"""Non-zero elastic-net weights a gene needs to be preferred for the demo's attribution (the
correlation with the elastic net needs 3 shared variants)."""

WHAT = {"expression": "log expression", "shard": "personal haplotype shards",
        "train": "fine-tuning", "predict": "test predictions", "baselines": "variant baselines",
        "attribute": "variant attribution", "evaluate": "evaluation and report"}
"""What each stage makes, for the demo's progress lines."""


def attribution_gene(workdir: str | os.PathLike | Workdir, split: str = "test") -> str:
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
    layout = Workdir(workdir)
    genes_path = layout.predictor("elastic_net") / "genes.parquet"
    try:
        split_genes = (pl.read_parquet(layout.manifest, columns=["gene", "split"])
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
        raise AttributionError(f"{genes_path}: no gene with {split} individuals in "
                               f"{layout.manifest} has variants in its window; nothing to "
                               "attribute")
    return ranked["gene"][0]


def _stage_arguments(stage: str, study: StudyConfig, layout: Workdir, name: str) -> list[str]:
    """What the demo adds to a stage's command line besides the study, workdir and --set."""
    if stage == "train":
        resume = (layout.run(name) / "checkpoints" / "latest").exists()
        return ["--name", name, *(["--resume"] if resume else [])]
    if stage == "predict":
        return ["--run", name, "--split", "test"]
    if stage == "baselines":
        # the baselines see the variants of the model's window (the loader's crop, if any)
        window = study.loader.length
        return ["--length", str(window)] if window else []
    if stage == "attribute":
        # one test gene, chosen from the baselines' counts; 8 people keep it short
        return ["--run", name, "--gene", attribution_gene(layout), "--split", "test",
                "--max-individuals", "8"]
    return []


def _stage_sets(module, sets: list[str], argv: list[str]) -> list[str]:
    """The ``--set`` items of the settings ``module``'s command reads when run with ``argv``
    (:meth:`hapflow.command.Command.reads_key`), as ``--set`` options."""
    command = module.COMMAND
    args = build_parser(command).parse_args(argv)
    mine = []
    for item in sets:
        section, _, key = item.partition("=")[0].strip().partition(".")
        if section in command.reads and command.reads_key(section, key.strip(), args):
            mine.append(item)
    return [arg for item in mine for arg in ("--set", item)]


def _check_sets_reach_a_stage(sets: Sequence[str]) -> None:
    """A ``--set`` that no stage of the demo reads is an error (never silently ignored)."""
    commands = [importlib.import_module(COMMANDS[stage]).COMMAND for stage in STAGES]
    for item in sets:
        section, _, key = item.partition("=")[0].strip().partition(".")
        if not any(c.reads_key(section, key.strip()) for c in commands if section in c.reads):
            raise ConfigError(f"--set {item}: no stage of the demo reads [{section}] "
                              f"{key.strip()} (stages: {', '.join(STAGES)})")


def run_demo(study: StudyConfig, workdir: str | os.PathLike | Workdir, config: str,
             sets: Sequence[str] = (), name: str = "demo", quiet: bool = False) -> int:
    """Run the stages in order; stop at the first that fails. Returns its exit code (0: all
    done).

    Parameters
    ----------
    study : StudyConfig
        The study with every override applied (checked before any stage runs).
    workdir : Workdir or path
    config : str
        The study file, given to each stage's command line.
    sets : list of str
        The demo's ``--set SECTION.KEY=VALUE`` items; each stage gets those of its sections.
    name : str
        The training run's name.
    quiet : bool
        Pass ``--quiet`` to every stage.
    """
    layout = Workdir(workdir)
    _check_sets_reach_a_stage(sets)
    common = ["--config", config, "--workdir", str(layout)] + (["--quiet"] if quiet else [])
    started = time.monotonic()
    for i, stage in enumerate(STAGES, 1):
        module_name = COMMANDS[stage]
        what = WHAT.get(stage, stage)
        log.info("[%d/%d] %s: python -m %s", i, len(STAGES), what, module_name)
        t0 = time.monotonic()
        module = importlib.import_module(module_name)
        own = _stage_arguments(stage, study, layout, name)
        argv = common + _stage_sets(module, list(sets), common + own) + own
        code = module.main(argv)
        if code:
            log.error("The demo stopped at step %d (%s): python -m %s exited with %d", i, what,
                      module_name, code)
            return code
        log.info("      done in %.0f s", time.monotonic() - t0)
    log.warning("The whole path took %.1f minutes", (time.monotonic() - started) / 60)
    return 0
