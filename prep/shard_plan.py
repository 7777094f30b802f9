"""The study plan: which (gene, individual) samples a study's shards hold, decided from tables.

:func:`plan_study` joins the TSS table, the expression matrix, the VCF's samples and the split
into the list of samples to shard, with their primary targets, and assigns each gene to a shard.
It reads tables only (and checks every input file: contigs, VCF completeness and index) and
raises :class:`ShardError` before anything is written. Genes are matched by
:func:`hapflow.names.gene_key` (Ensembl versions and case ignored).

Build order: contigs as first met in the TSS table, genes by TSS. Shards (``shard-NNNNNN.tar``,
:func:`prep.shard_format.shard_name`) take the genes in build order, each gene with all its
samples (every split: one record per gene, :mod:`prep.gene_record`); a new shard starts when the
next gene would take the current one past ``[shard] shard_samples`` samples (a gene with more
samples than that gets a shard of its own). The manifest lists the samples by split (train,
val, test), then gene in build order, then individual (sorted); ``row`` is the individual's row
in its gene's record, whose individuals are the gene's individuals of every split, sorted.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from hapflow.layout import Workdir
from hapflow.names import SPLITS, gene_key
from hapflow.sections import HaplotypesConfig, ShardConfig
from prep.contigs import ContigError
from prep.expression_files import read_expression
from prep.reference import Reference
from prep.regions import read_tss_table
from prep.shard_format import shard_name
from prep.splits import (
    population_split,
    random_split,
    read_paper_splits,
    read_samples,
    read_splits,
    unseen_gene_split,
)
from prep.targets import compute_targets
from prep.vcf_files import VcfSet, check_vcf_file, read_sample_list

__all__ = ["ShardError", "StudyPlan", "plan_study", "layout_digest", "input_files",
           "IDENTITY_COLUMNS", "PARTIAL_REASON"]

IDENTITY_COLUMNS = ("split", "shard", "key", "row", "gene", "individual", "population", "chrom",
                    "tss", "strand")
"""Manifest columns that describe the samples and where they are stored (not the targets)."""

MANIFEST_COLUMNS = ("split", "shard", "key", "row", "gene", "symbol", "individual", "population",
                    "chrom", "tss", "strand", "Y", "Z", "P")
"""The plan's manifest columns, in order (the targets table adds further target sets, build and
targets_build: :func:`prep.target_table.with_targets`)."""


class ShardError(ValueError):
    """The study cannot be sharded as configured; the message says what to fix."""


@dataclass
class StudyPlan:
    """What a study's shards hold, decided before any sequence is built.

    Attributes
    ----------
    manifest : pl.DataFrame
        One row per sample (:data:`MANIFEST_COLUMNS`): split, shard (path relative to
        DIR/shards), key (:func:`prep.shard_format.sample_key`), row (int32: the individual's
        row in its gene's record), gene, symbol, individual, population, chrom, tss (0-based),
        strand, Y, Z, P (the primary targets); once :func:`prep.sharding.run_shard` has
        fingerprinted the build, also the further target sets' columns, build (the sequence
        build) and targets_build (:func:`prep.target_table.with_targets`).
    genes : pl.DataFrame
        gene, name, symbol, chrom, tss, strand, shard and individuals (the sorted individuals of
        its record: every split) of every gene in the manifest, in build order.
    individuals : list of str
        Every individual of the manifest (sorted).
    splits : pl.DataFrame
        The split used (gene, individual, split).
    drops : dict
        Why inputs were left out: reason -> {"count": n, "examples": [...]}.
    """

    manifest: pl.DataFrame
    genes: pl.DataFrame
    individuals: list
    splits: pl.DataFrame
    drops: dict

    @property
    def shards(self) -> list[str]:
        """Shard paths relative to DIR/shards, in build order."""
        return self.genes["shard"].unique(maintain_order=True).to_list()


def plan_study(hcfg: HaplotypesConfig, scfg: ShardConfig,
               workdir: Workdir | str | os.PathLike) -> StudyPlan:
    """Join TSSs, expression, VCF samples and splits into the list of samples to shard.

    Parameters
    ----------
    hcfg, scfg : HaplotypesConfig, ShardConfig
        The study's ``[haplotypes]`` (reference, vcf, tss, samples) and ``[shard]`` sections.
    workdir : Workdir, str or Path
        The study folder (its expression matrix is the default ``[shard] expression``).

    Raises
    ------
    ShardError
        Inputs that leave nothing to shard, contigs missing from the FASTA or VCF, unknown
        samples; each names the file and what to fix. Raised before anything is written.
    """
    expression_path = _check_inputs(hcfg, scfg, Workdir(workdir))
    drops: dict = {}
    tss = read_tss_table(hcfg.tss, one_based=hcfg.tss_one_based)
    matrix = read_expression(expression_path, scfg.expression_format)
    vcfs = VcfSet(hcfg.vcf)  # opened once: samples here, contigs in _check_contigs
    individuals = _individuals(hcfg, matrix, vcfs, expression_path, drops)
    tss = _genes(tss, matrix, hcfg, expression_path, drops)
    _check_contigs(tss, hcfg, vcfs)
    matrix = matrix.filter(pl.col("gene").is_in(tss["gene"].to_list())).select(
        ["gene", *individuals]
    )
    splits = _split(scfg, tss, individuals, drops)
    targets = _targets(matrix, splits, scfg, drops)
    genes, manifest = _assign_shards(targets, _gene_order(tss), _populations(scfg), scfg)
    used = targets.select("gene", "individual", "split")
    return StudyPlan(manifest=manifest, genes=genes, individuals=individuals, splits=used,
                     drops=drops)


def _check_inputs(hcfg: HaplotypesConfig, scfg: ShardConfig, workdir: Workdir) -> str:
    """The settings prep.shard needs are set and the expression matrix exists (its path)."""
    for what, value in (("reference", hcfg.reference), ("vcf", hcfg.vcf), ("tss", hcfg.tss)):
        if not value:
            raise ShardError(f"[haplotypes] {what} is not set; prep.shard needs it")
    expression_path = scfg.expression or str(workdir.expression_matrix)
    if not Path(expression_path).exists():
        raise ShardError(
            f"expression matrix {expression_path} does not exist: set [shard] expression or run "
            "`python -m prep.expression` with the same --workdir first"
        )
    return expression_path


def _drop(drops: dict, reason: str, items: list) -> None:
    if items:
        drops[reason] = {"count": len(items), "examples": sorted(map(str, items))[:5]}


def _individuals(hcfg: HaplotypesConfig, matrix: pl.DataFrame, vcfs: VcfSet,
                 expression_path: str, drops: dict) -> list[str]:
    """Individuals with genotypes in every VCF of the set and expression (and requested, when
    samples are named). Samples missing from some VCF are recorded in ``drops`` with the files
    they are missing from and named in one warning."""
    vcf_samples = set(vcfs.samples)
    wanted = read_sample_list(hcfg.samples, hcfg.samples_file)
    expr_individuals = [c for c in matrix.columns if c != "gene"]
    if wanted is not None:
        unknown = [s for s in wanted if s not in vcf_samples]
        if unknown:
            partial = [s for s in unknown if s in vcfs.partial]
            where = (f" ({len(partial)} of them are in some of its files only, e.g. {partial[0]}"
                     f", missing from {', '.join(p.name for p in vcfs.partial[partial[0]])})"
                     if partial else "")
            raise ShardError(
                f"{len(unknown)} requested sample(s) are not in every file of {vcfs.describe()}"
                f", e.g. {unknown[:5]}{where}"
            )
        expr_individuals = [s for s in expr_individuals if s in set(wanted)]
        _drop(drops, "requested but without expression", [s for s in wanted
                                                             if s not in set(matrix.columns)])
    _drop_partial(vcfs, drops, set(expr_individuals))
    _drop(drops, "individual has expression but is not in the VCF",
          [s for s in expr_individuals if s not in vcf_samples and s not in vcfs.partial])
    _drop(drops, "individual is in the VCF but has no expression",
          sorted(vcf_samples - set(expr_individuals) - ({"gene"})) if wanted is None else [])
    individuals = sorted(s for s in expr_individuals if s in vcf_samples)
    if not individuals:
        raise ShardError(
            f"no individual is both in the expression matrix {expression_path} and in every "
            f"file of the VCF set {vcfs.describe()}; check that they use the same sample ids"
        )
    return individuals


PARTIAL_REASON = "individual is not in every VCF of the set"
"""The ``quality.json`` ``dropped`` reason of samples that some VCF of the set lacks."""


def _drop_partial(vcfs: VcfSet, drops: dict, with_expression: set[str]) -> None:
    """Record the samples some VCF of the set lacks (each with the files it is missing from,
    and how many have expression) and name them in one warning."""
    if not vcfs.partial:
        return
    _drop(drops, PARTIAL_REASON, list(vcfs.partial))
    drops[PARTIAL_REASON].update(
        with_expression=sum(s in with_expression for s in vcfs.partial),
        missing_from={s: [str(p) for p in files] for s, files in vcfs.partial.items()})
    vcfs.warn_partial(f"; {drops[PARTIAL_REASON]['with_expression']} of them have expression. "
                      f"All are listed in the shards' quality.json under dropped, "
                      f"{PARTIAL_REASON!r}")


def _genes(tss: pl.DataFrame, matrix: pl.DataFrame, hcfg: HaplotypesConfig,
           expression_path: str, drops: dict) -> pl.DataFrame:
    """The TSS table's genes that have expression, with the matrix's id as ``gene`` (and the
    match key ``_k``): ids are matched without version, case-insensitively."""
    tss = tss.with_columns(pl.col("name").map_elements(gene_key, return_dtype=pl.Utf8).alias("_k"))
    matrix_keys = {gene_key(g): g for g in matrix["gene"]}
    _drop(drops, "gene has a TSS but no expression",
          [n for n, k in zip(tss["name"], tss["_k"], strict=True) if k not in matrix_keys])
    _drop(drops, "gene has expression but no TSS",
          [g for k, g in matrix_keys.items() if k not in set(tss["_k"])])
    tss = tss.filter(pl.col("_k").is_in(list(matrix_keys)))
    if tss.height == 0:
        raise ShardError(
            f"no gene of the TSS table {hcfg.tss} is in the expression matrix {expression_path}; "
            "gene ids must match (Ensembl version suffixes are ignored)"
        )
    return tss.with_columns(
        pl.col("_k").replace_strict(matrix_keys, return_dtype=pl.Utf8).alias("gene")
    )


def _check_contigs(tss: pl.DataFrame, hcfg: HaplotypesConfig, vcfs: VcfSet) -> None:
    """Every gene's contig is in the FASTA and a usable VCF, its TSS inside the contig."""
    ref = Reference(hcfg.reference)
    for chrom in tss["chrom"].unique(maintain_order=True):
        genes = tss.filter(pl.col("chrom") == chrom)["name"].to_list()
        try:
            ref.resolve(chrom)
            path, _ = vcfs.locate(chrom)
        except ContigError as err:
            raise ShardError(
                f"{len(genes)} gene(s) (e.g. {genes[0]}) lie on {chrom}: {err}. Drop them from "
                "the TSS table or use matching files."
            ) from None
        check_vcf_file(path)  # complete, indexed, index current: before anything is written
        n = ref.length(chrom)
        bad = tss.filter((pl.col("chrom") == chrom) & (pl.col("tss") >= n))
        if bad.height:
            raise ShardError(
                f"gene {bad['name'][0]} has its TSS at {chrom}:{bad['tss'][0] + 1}, past the end "
                f"of the contig ({n} bases) in {hcfg.reference}: check the genome build"
            )
    ref.close()


def _split(scfg: ShardConfig, tss: pl.DataFrame, individuals: list[str],
           drops: dict) -> pl.DataFrame:
    """The split (gene, individual, split) of ``[shard] splits``: generated or from a file."""
    genes = tss["gene"].to_list()
    if scfg.splits == "random":
        return random_split(genes, individuals, n_test=scfg.n_test,
                            test_fraction=None if scfg.n_test is not None else scfg.test_fraction,
                            val_fraction=scfg.val_fraction, seed=scfg.seed)
    if scfg.splits == "population":  # the section has checked samples_table is set
        return population_split(genes, read_samples(scfg.samples_table), scfg.population,
                                individuals=individuals, val_fraction=scfg.val_fraction,
                                seed=scfg.seed)
    if scfg.splits == "unseen":  # the section has checked test_chroms is set
        return unseen_gene_split(dict(zip(genes, tss["chrom"], strict=True)), scfg.test_chroms,
                                 individuals, val_fraction=scfg.val_fraction, seed=scfg.seed)
    return _split_file(scfg, tss, individuals, drops)


def _split_file(scfg: ShardConfig, tss: pl.DataFrame, individuals: list[str],
                drops: dict) -> pl.DataFrame:
    """The split of a file (``file``: long or wide; ``paper``: the paper's two tables).

    That the mode's files are set and exist is checked when the study is loaded
    (:func:`hapflow.config.check_study`).
    """
    if scfg.splits == "paper":
        splits = read_paper_splits(scfg.splits_file, scfg.gene_classes)
    else:
        splits = read_splits(scfg.splits_file)
    splits = _match_split_genes(splits, tss, drops)
    _drop(drops, "split lists an individual without genotypes or expression",
          sorted(set(splits["individual"]) - set(individuals)))
    splits = splits.filter(pl.col("individual").is_in(individuals))
    if splits.height == 0:
        raise ShardError(
            f"the split file {scfg.splits_file} shares no (gene, individual) pair with the "
            "TSS table, expression matrix and VCF"
        )
    return splits


def _match_split_genes(splits: pl.DataFrame, tss: pl.DataFrame, drops: dict) -> pl.DataFrame:
    """Map split-file gene names (ids or symbols, any case) to the expression matrix's ids."""
    lookup = dict(zip(tss["_k"], tss["gene"], strict=True))
    for sym, gene in zip(tss["symbol"], tss["gene"], strict=True):
        if sym:
            lookup.setdefault(sym.upper(), gene)
    names = splits["gene"].unique().to_list()
    mapping = {n: lookup.get(gene_key(n), lookup.get(n.upper())) for n in names}
    _drop(drops, "split names a gene without TSS or expression",
          [n for n, g in mapping.items() if g is None])
    known = {n: g for n, g in mapping.items() if g is not None}
    return splits.filter(pl.col("gene").is_in(list(known))).with_columns(
        pl.col("gene").replace_strict(known, return_dtype=pl.Utf8)
    )


def _targets(matrix: pl.DataFrame, splits: pl.DataFrame, scfg: ShardConfig,
             drops: dict) -> pl.DataFrame:
    """Y, Z, P of every split pair (:func:`prep.targets.compute_targets`), NaN ones dropped."""
    targets = compute_targets(matrix, splits, reference=scfg.target_reference)
    is_nan = pl.col("Y").is_nan() | pl.col("Z").is_nan() | pl.col("P").is_nan()
    nan = targets.filter(is_nan)
    _drop(drops, "target is NaN", [f"{g}/{i}" for g, i in zip(nan["gene"], nan["individual"],
                                                                strict=True)])
    return targets.filter(~is_nan)


def _populations(scfg: ShardConfig) -> dict[str, str]:
    """Individual -> population of ``[shard] samples_table`` (empty without one)."""
    if not scfg.samples_table:
        return {}
    table = read_samples(scfg.samples_table)
    return dict(zip(table["sample"], table["population"], strict=True))


def _gene_order(tss: pl.DataFrame) -> pl.DataFrame:
    """Genes in build order: contigs as first met in the TSS table, then by TSS."""
    contig_rank = {c: i for i, c in enumerate(tss["chrom"].unique(maintain_order=True))}
    return (
        tss.with_columns(pl.col("chrom").replace_strict(contig_rank, return_dtype=pl.Int64)
                         .alias("_c"))
        .sort(["_c", "tss", "gene"])
        .select("gene", "name", "symbol", "chrom", "tss", "strand")
    )


def _assign_shards(targets: pl.DataFrame, order: pl.DataFrame, populations: dict[str, str],
                   scfg: ShardConfig) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The genes (build order, with shard and individuals) and the manifest (see the module
    docstring for the order and the shard rule)."""
    rank = pl.DataFrame({"gene": order["gene"], "_r": range(order.height)},
                        schema={"gene": pl.Utf8, "_r": pl.Int64})
    samples = targets.join(rank, on="gene").sort(["_r", "individual"])
    per_gene = samples.group_by("_r", maintain_order=True).agg(
        pl.col("individual").alias("individuals"))
    shards, index, in_shard = [], 0, 0
    for n in per_gene["individuals"].list.len():
        if in_shard and in_shard + n > scfg.shard_samples:
            index, in_shard = index + 1, 0
        shards.append(shard_name(index))
        in_shard += n
    genes = (order.with_row_index("_r").with_columns(pl.col("_r").cast(pl.Int64))
             .join(per_gene.with_columns(pl.Series("shard", shards, pl.Utf8)), on="_r")
             .sort("_r"))
    split_rank = pl.col("split").replace_strict({s: i for i, s in enumerate(SPLITS)},
                                                return_dtype=pl.Int64)
    safe = lambda c: pl.col(c).str.replace_all(r"[./]", "_")  # noqa: E731 - safe_key, vectorised
    manifest = (
        samples.with_columns(pl.int_range(pl.len(), dtype=pl.Int32).over("_r").alias("row"))
        .join(genes.select("_r", "symbol", "chrom", "tss", "strand", "shard"), on="_r")
        .with_columns(
            pl.concat_str([safe("gene"), pl.lit("__"), safe("individual")]).alias("key"),
            pl.col("symbol").replace("", None),
            pl.col("individual").replace_strict(populations, default="NA",
                                                return_dtype=pl.Utf8).alias("population"))
        .sort([split_rank, pl.col("_r"), pl.col("individual")])
        .select(MANIFEST_COLUMNS)
    )
    return genes.drop("_r"), manifest


def layout_digest(manifest: pl.DataFrame) -> str:
    """sha256 (hex) of the manifest's identity columns (:data:`IDENTITY_COLUMNS`), row by row.

    Equal digests mean the same samples in the same splits, shards and record rows.
    """
    text = manifest.select(IDENTITY_COLUMNS).write_csv()
    return hashlib.sha256(text.encode()).hexdigest()


def input_files(hcfg: HaplotypesConfig, scfg: ShardConfig) -> dict[str, str | None]:
    """Every input file whose content decides the shards' bytes (name -> path or None).

    The expression matrices are not among them: their values are targets (targets.json), and
    which samples they give is in the layout digest (:func:`layout_digest`).
    """
    files = [str(f) for f in VcfSet(hcfg.vcf).files] if hcfg.vcf else []
    vcfs = {"vcf": files[0]} if len(files) == 1 else {
        f"vcf:{os.path.basename(f)}": f for f in files}
    return {
        "reference": hcfg.reference, **vcfs, "tss": hcfg.tss,
        "samples_file": hcfg.samples_file,
        "splits_file": scfg.splits_file, "gene_classes": scfg.gene_classes,
        "samples_table": scfg.samples_table,
    }
