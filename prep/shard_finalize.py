"""Finishing a study's shards: the tables, quality.json and, last, meta.json.

Once every shard of the plan exists (the last ``--part`` job to finish gets here), the study's
tables are written beside the shards, each atomically: the targets table (manifest.parquet,
targets.json; :mod:`prep.target_table`), splits.parquet, config.toml, build.json, quality.json
and README.txt, then ``meta.json`` last, so a folder without meta.json holds no tables. Every
gene record must carry this run's build fingerprint: ``--part`` jobs run with different settings or
inputs refuse to finish together (before anything is written).
"""

from __future__ import annotations

import importlib.metadata as md
import logging
import os
from pathlib import Path

import polars as pl

from hapflow.config import StudyConfig, config_to_dict
from hapflow.io import atomic_write_json, atomic_write_parquet, atomic_write_text
from hapflow.layout import Workdir
from hapflow.names import SPLITS
from hapflow.sections import ShardConfig
from prep.fingerprint import BUILD_JSON, TARGET_SETTINGS, file_sha256
from prep.shard_format import FORMAT_VERSION
from prep.shard_plan import ShardError, StudyPlan, input_files
from prep.shard_tar import build_metas
from prep.target_table import write_targets

__all__ = ["finalize", "readme_text", "META_JSON", "STUDY_TABLES", "CONVENTIONS"]

log = logging.getLogger(__name__)

META_JSON = "meta.json"
"""Written last into ``DIR/shards``: versions, input checksums, counts, every shard's sha256."""

STUDY_TABLES = ("manifest.parquet", "targets.json", "splits.parquet", "config.toml",
                BUILD_JSON, "quality.json", "README.txt")
"""Files of ``DIR/shards`` besides the shards, written after them (``meta.json`` comes last)."""

CONVENTIONS = {
    "tss": "0-based position of the gene's TSS on the reference (1-based = tss + 1), as the "
           "manifest's and every gene JSON's 'tss'",
    "window": "a window of n <= W bases (W = L + 2 * flank, L = [haplotypes] length) is the "
              "haplotype's n bases around the haplotype position of the reference TSS, which "
              "sits at index n // 2 (n - 1 - n // 2 when reverse_complemented); built from the "
              "gene's record: the + strand reference span [span_start, span_start + n_ref), "
              "0-based half-open, covering every base such a window needs, and each "
              "haplotype's edits against it",
    "row": "the individual's row in its gene's record (individuals sorted, every split); "
           "haplotype h (0, 1) of row r is row 2 * r + h of the record's bit matrix",
    "sequence": "uint8 codes A, C, G, T, N = 0, 1, 2, 3, 4; haplotype 1 and 2 are the GT "
                "allele order of the VCF",
    "chrom": "as the TSS table spells it (the FASTA and VCF names are matched through aliases "
             "such as chr22 = 22)",
    "symbol": "the gene symbol from the TSS table (empty when the table has none)",
    "Y": "log expression as given by the expression matrix; Z and P: per-gene z-score and "
         "percentile (0-100) over the target_reference individuals",
}
"""Coordinate and value conventions, written into meta.json and README.txt beside the files."""

_VERSIONED = ("hapflow", "numpy", "numba", "cyvcf2", "pysam", "polars", "zstandard")


def finalize(plan: StudyPlan, study: StudyConfig, workdir: Workdir | str | os.PathLike,
             build: str, components: dict, targets: dict | None = None) -> None:
    """Write the study's tables, quality.json and, last, meta.json (re-reads the shards' gene
    JSONs).

    Parameters
    ----------
    plan : StudyPlan
        Its manifest as the targets table (with the target columns, build, targets_build).
    study : StudyConfig
        ``[haplotypes]`` and ``[shard]`` as built.
    build, components : str, dict
        The sequence build fingerprint and what it is made of (:mod:`prep.fingerprint`).
    targets : dict, optional
        The ``targets.json`` record (:func:`prep.target_table.with_targets`): writes
        manifest.parquet and targets.json; None leaves them as they are.

    Raises
    ------
    ShardError
        A gene written by another build (``--part`` jobs of different settings or inputs).
    """
    workdir = Workdir(workdir)
    out_dir = workdir.shards
    gene_stats, shard_info = _read_shards(plan, out_dir, build)
    per_split = _split_counts(plan.manifest)
    no_variant = [g for g, st in gene_stats.items() if st["variants_in_window"] == 0]
    quality = {"splits": per_split, "dropped": plan.drops,
               "genes_without_variants": {"count": len(no_variant), "genes": sorted(no_variant)},
               "genes": dict(sorted(gene_stats.items()))}
    if targets is not None:
        write_targets(workdir, plan.manifest, targets)
    atomic_write_parquet(plan.splits, out_dir / "splits.parquet")
    study.save(out_dir / "config.toml", ("haplotypes", "shard"))
    atomic_write_json(out_dir / BUILD_JSON, {"build": build, "components": components})
    atomic_write_json(out_dir / "quality.json", quality)
    atomic_write_text(out_dir / "README.txt", readme_text(study.shard))
    meta = _meta(plan, study, build, components, shard_info, per_split)
    atomic_write_json(out_dir / META_JSON, meta)
    _log_summary(plan, study, out_dir, gene_stats, no_variant, meta["counts"]["bytes"])


def _read_shards(plan: StudyPlan, out_dir: Path, build: str) -> tuple[dict, dict]:
    """Per gene its variant and genotype counts, per shard its sha256, bytes and samples, from
    the shards' gene JSONs; every gene must carry ``build``."""
    symbols = dict(zip(plan.genes["gene"], plan.genes["symbol"], strict=True)) \
        if "symbol" in plan.genes.columns else {}
    gene_stats: dict[str, dict] = {}
    shard_info = {}
    for shard in plan.shards:
        path = out_dir / shard
        n = 0
        for _, meta in build_metas(path, build, ShardError):
            n += len(meta["individuals"])
            st = gene_stats.setdefault(meta["gene"], {
                "symbol": symbols.get(meta["gene"]),
                "chrom": meta["chrom"], "tss": meta["tss"], "variants_in_window":
                meta["n_variants"], "ref_mismatches": meta["n_ref_mismatch"],
                "missing_genotypes": 0, "individuals": 0})
            st["missing_genotypes"] += meta["missing_genotypes"]
            st["individuals"] += len(meta["individuals"])
        shard_info[shard] = {"sha256": file_sha256(path), "bytes": path.stat().st_size,
                             "samples": n}
    return gene_stats, shard_info


def _split_counts(m: pl.DataFrame) -> dict[str, dict[str, int]]:
    """Per split: genes, individuals, samples and shards of the manifest."""
    return {
        s: {"genes": m.filter(pl.col("split") == s)["gene"].n_unique(),
            "individuals": m.filter(pl.col("split") == s)["individual"].n_unique(),
            "samples": m.filter(pl.col("split") == s).height,
            "shards": m.filter(pl.col("split") == s)["shard"].n_unique()}
        for s in SPLITS
    }


def _versions() -> dict[str, str | None]:
    versions = {}
    for pkg in _VERSIONED:
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    return versions


def _meta(plan: StudyPlan, study: StudyConfig, build: str, components: dict, shard_info: dict,
          per_split: dict) -> dict:
    """meta.json: the sequences' settings, versions, input checksums, counts, every shard."""
    hcfg, scfg = study.haplotypes, study.shard
    inputs = {name: {"path": os.path.basename(p), "sha256": components["inputs"][name]}
              for name, p in input_files(hcfg, scfg).items() if p}
    # the targets (and their matrices' checksums) are described by targets.json, which a
    # re-target rewrites; meta.json describes the sequences
    shard_settings = {k: v for k, v in config_to_dict(scfg).items() if k not in TARGET_SETTINGS}
    m = plan.manifest
    total = sum(v["bytes"] for v in shard_info.values())
    return {
        "format": FORMAT_VERSION,
        "build": build,
        "config": {"haplotypes": config_to_dict(hcfg), "shard": shard_settings},
        "samples_digest": components["samples"], "targets": "targets.json",
        "versions": _versions(), "inputs": inputs,
        "counts": {"samples": m.height, "genes": m["gene"].n_unique(),
                   "individuals": m["individual"].n_unique(), "shards": len(shard_info),
                   "bytes": total, "bytes_per_sample": total / max(m.height, 1)},
        "splits": per_split, "shards": shard_info, "conventions": CONVENTIONS,
    }


def _log_summary(plan: StudyPlan, study: StudyConfig, out_dir: Path, gene_stats: dict,
                 no_variant: list[str], total: int) -> None:
    m = plan.manifest
    log.info("Wrote %d shards (%d samples, %.0f bytes per diploid sample) to %s",
             len(plan.shards), m.height, total / max(m.height, 1), out_dir)
    n_missing = sum(s["missing_genotypes"] for s in gene_stats.values())
    n_mis = sum(s["ref_mismatches"] for s in gene_stats.values())
    log.info("Data quality: %d genes; %d missing genotypes kept the reference; %d REF "
             "mismatches skipped; details in %s", len(gene_stats), n_missing, n_mis,
             out_dir / "quality.json")
    if no_variant:
        names = [f"{gene_stats[g]['symbol'] or g}" for g in no_variant]
        log.warning(
            "%d of %d genes have no variant in their %d bp window (e.g. %s): every individual "
            "gets the reference sequence there, so a sequence model cannot tell individuals "
            "apart on them; check that the VCF covers these regions (listed in %s under "
            "genes_without_variants)", len(no_variant), len(gene_stats), study.haplotypes.length,
            ", ".join(names[:5]), out_dir / "quality.json")


def readme_text(scfg: ShardConfig) -> str:
    """README.txt of DIR/shards: what each file holds and its conventions, in plain words."""
    lines = [
        "hapflow study shards (written by `python -m prep.shard`; shard format 3: "
        "prep.shard_format, prep.gene_record)",
        "",
        "Files",
        "  shard-NNNNNN.tar  WebDataset shards: per gene its JSON, its reference span "
        "(2 bits per base) and its haplotypes as edits against it (zstd), for every "
        "individual of the gene (all splits)",
        "  manifest.parquet  one row per (gene, individual): split, shard, key, row, gene, "
        "symbol, individual, population, chrom, tss, strand, the targets Y, Z, P "
        "(and Y:NAME, ... per target set), build, targets_build",
        "  targets.json      where the targets come from (matrices, sha256, settings)",
        "  splits.parquet    the split used: gene, individual, split",
        "  quality.json      per split counts, what was left out and why, per gene variants in "
        "window, REF mismatches, missing genotypes; genes without any variant",
        "  config.toml       the resolved [haplotypes] and [shard] settings",
        "  build.json        the build fingerprint and what it is made of",
        "  meta.json         written last: versions, input checksums, counts, every shard's sha256",
        "",
        "Conventions",
        *[f"  {k}: {v}" for k, v in CONVENTIONS.items()],
        f"  flank: {scfg.flank} extra real bases each side of the L-bp window (shifts beyond "
        "them fill N)",
        "",
        "Check the folder with `python -m prep.verify DIR/shards`.",
        "",
    ]
    return "\n".join(lines)
