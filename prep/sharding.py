"""The data-prep stage: haplotypes + targets + splits -> WebDataset shards.

:func:`run_shard` writes the shards of one part of a study, in four steps, each a module:

1. plan (:mod:`prep.shard_plan`): from tables alone, which (gene, individual) samples exist,
   their targets and split, and which shard each gene lands in;
2. resume (:mod:`prep.shard_resume`): which shards are on disk with this build, which are stale,
   which this part has to build;
3. build (:mod:`prep.shard_build`): every gene's record of the missing shards (its reference
   span once, its haplotypes as edits), encoded, written;
4. finalize (:mod:`prep.shard_finalize`): once every shard exists, the tables and meta.json.

Layout under ``DIR/shards`` (shard format 3, :mod:`prep.shard_format`)::

    shard-NNNNNN.tar           WebDataset shards: per gene (build order) its record, for every
                               individual the study has for it, any split (prep.gene_record)
    manifest.parquet           one row per sample: split, shard, key, row, gene, symbol,
                               individual, population, chrom, tss, strand, the targets, build,
                               targets_build (the one targets table, prep.target_table)
    targets.json               where the targets come from (matrices, sha256, settings)
    splits.parquet             the split actually used (gene, individual, split)
    quality.json               data-quality summary (drops and why; per split; per gene)
    meta.json                  resolved config, versions, input checksums, counts, shard sha256
    config.toml                the resolved config
    build.json                 the build fingerprint and what it is made of (prep.fingerprint)
    README.txt                 what each file holds and its coordinate conventions

Inputs are checked before anything is written (tables, contigs, VCF files: present, complete,
indexed, index not older than the data). Problems only met while building (a REF that disagrees
with the FASTA, a GT allele out of range, a short record) stop the run with every temp file
removed; the study's tables (manifest, targets.json, splits, config, build.json, quality.json,
README.txt) are written after the shards and ``meta.json`` last, so a folder without
``meta.json`` holds no tables (only finished shards, which a re-run resumes). Every file is
written atomically; a re-run resumes (skips finished shards) only when its build
fingerprint (sequence settings + input checksums + sample layout) equals the shards', and
otherwise stops saying what changed (``overwrite`` rebuilds); the same inputs and seed give
byte-identical outputs. Shards hold no targets: a re-run whose only change is in the targets
(expression values, ``target_reference``, ``target_sets``) rewrites the targets table and
leaves the shards alone. ``part=(K, N)`` builds every shard whose
number is K-1 modulo N, so N machines share a study and the union of their outputs equals a
single run. A folder of an older shard format (format 2) stops the run with a message to
rebuild with ``overwrite``, which removes it.
"""

from __future__ import annotations

import logging
import os

import polars as pl

from hapflow.config import StudyConfig
from hapflow.io import os_error_message
from hapflow.layout import Workdir
from hapflow.names import SPLITS
from prep.fingerprint import TARGET_SETTINGS, build_components, fingerprint
from prep.shard_build import build_shards
from prep.shard_finalize import finalize
from prep.shard_format import FORMAT_VERSION
from prep.shard_plan import ShardError, StudyPlan, input_files, layout_digest, plan_study
from prep.shard_resume import part_work, prepare_folder, targets_build_of
from prep.target_table import with_targets, write_targets

__all__ = ["run_shard", "parse_part"]

log = logging.getLogger(__name__)


def parse_part(text: str | None) -> tuple[int, int]:
    """``"K/N"`` -> (K, N) with 1 <= K <= N; ``None`` -> (1, 1)."""
    if not text:
        return 1, 1
    try:
        k, n = (int(x) for x in str(text).split("/"))
    except ValueError:
        raise ShardError(f"--part {text!r}: expected K/N, e.g. 2/8") from None
    if not 1 <= k <= n:
        raise ShardError(f"--part {text}: K must be between 1 and N")
    return k, n


def run_shard(
    study: StudyConfig,
    workdir: Workdir | str | os.PathLike,
    part: tuple[int, int] = (1, 1),
    overwrite: bool = False,
) -> dict:
    """Write the shards of one part of a study (``[haplotypes]``, ``[shard]``) into DIR/shards.

    Steps: plan (tables only; errors before any write) -> fingerprint the sequence build
    (settings, input checksums and sample layout, :mod:`prep.fingerprint`) and join the targets
    -> compare with the folder (refuse, before writing anything, shards of another build unless
    ``overwrite``) -> when every shard already holds this build: rewrite the targets table if
    the targets changed, else nothing -> build and write the missing shards of this part ->
    when every shard exists, the tables and meta.json.

    Returns
    -------
    dict
        ``shards`` (of the study), ``built`` (by this run), ``part`` ("K/N"), ``samples``,
        ``build``; and ``finalized``, ``retargeted`` or ``nothing_to_do`` when so.

    Raises
    ------
    ShardError
        Besides bad inputs: shards of another build in ``DIR/shards`` without ``overwrite`` (the
        message lists what changed), or parts of different builds at finalisation.
    """
    workdir = Workdir(workdir)
    plan = plan_study(study.haplotypes, study.shard, workdir)
    _log_plan(plan)
    build, components = _fingerprint(plan, study, workdir)
    plan.manifest, targets = with_targets(plan.manifest.with_columns(pl.lit(build).alias("build")),
                                          study.shard, workdir, build, workdir.cache)
    work = part_work(plan, workdir, part, build, components, overwrite)
    summary = {"shards": len(plan.shards), "built": len(work.todo), "part": f"{part[0]}/{part[1]}",
               "samples": plan.manifest.height, "build": build}
    if work.complete:
        return {**summary, **_update_targets(plan, workdir, targets, build)}
    try:
        prepare_folder(workdir, work, build, components, overwrite)
        if work.todo:
            build_shards(plan, work.todo, study.haplotypes, study.shard, workdir.shards, build)
        if all((workdir.shards / s).exists() for s in plan.shards):
            finalize(plan, study, workdir, build, components, targets)
            summary["finalized"] = True
        else:
            log.info("Other parts' shards are still missing; the last part to finish writes "
                     "the tables (manifest.parquet, ...) and meta.json")
    except OSError as err:
        raise ShardError(os_error_message(err, workdir.shards)) from None
    return summary


def _log_plan(plan: StudyPlan) -> None:
    m = plan.manifest
    for split in SPLITS:
        s = m.filter(pl.col("split") == split)
        if s.height:
            log.info("%s: %d genes, %d individuals, %d samples", split, s["gene"].n_unique(),
                     s["individual"].n_unique(), s.height)
    for reason, d in plan.drops.items():
        log.info("Left out: %d (%s), e.g. %s", d["count"], reason, ", ".join(d["examples"][:3]))


def _fingerprint(plan: StudyPlan, study: StudyConfig, workdir: Workdir) -> tuple[str, dict]:
    """The sequence build's fingerprint and components (settings less the target ones, input
    checksums cached in DIR/.cache, the sample layout)."""
    components = build_components(
        {"haplotypes": study.haplotypes, "shard": study.shard},
        input_files(study.haplotypes, study.shard), FORMAT_VERSION, cache_dir=workdir.cache,
        ignore=TARGET_SETTINGS, samples=layout_digest(plan.manifest))
    return fingerprint(components), components


def _update_targets(plan: StudyPlan, workdir: Workdir, targets: dict, build: str) -> dict:
    """Every shard already holds this build: rewrite the targets table if it changed."""
    out_dir = workdir.shards
    if targets_build_of(workdir) != targets["targets_build"]:
        try:
            write_targets(workdir, plan.manifest, targets)
        except OSError as err:
            raise ShardError(os_error_message(err, workdir.manifest)) from None
        log.info("The %d shard(s) in %s already hold this build (%s); only the targets "
                 "changed, so the targets table (manifest.parquet, targets.json) was "
                 "rewritten and the shards were left alone", len(plan.shards), out_dir, build)
        return {"retargeted": True}
    log.info("Nothing to do: the %d shard(s) in %s already hold this build (%s) of the same "
             "settings and inputs; --overwrite rebuilds them", len(plan.shards), out_dir, build)
    return {"nothing_to_do": True}
