"""The data-prep stage: haplotypes + targets + splits -> WebDataset shards.

:func:`plan_study` decides, from tables alone, which (gene, individual) samples exist, their
targets and split, and which group and shard each lands in; :func:`run_shard` builds the
haplotypes and writes the shards of one part of that plan. Layout under ``DIR/shards``::

    {split}/shard-NNNNNN.tar   WebDataset shards (format: prep.shard_format)
    manifest.parquet           one row per sample: split, shard, group, index, key, gene, ...,
                               and the targets (the one targets table, prep.retarget)
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
index (over all splits, in order) is K-1 modulo N, so N machines share a study and the union of
their outputs equals a single run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from hapflow.config import config_to_dict, save_config
from hapflow.io import atomic_write_bytes, atomic_write_text
from hapflow.sections import HaplotypesConfig, ShardConfig
from prep.encoding import reverse_complement
from prep.export import os_error_message, read_sample_list, validate_length
from prep.fingerprint import (
    TARGET_SETTINGS,
    build_components,
    describe_changes,
    file_sha256,
    fingerprint,
)
from prep.shard_format import (
    FORMAT_VERSION,
    ShardFormatError,
    decode_meta,
    encode_group,
    encode_reference,
    group_key,
    sample_key,
)
from prep.shard_tar import ShardWriter, read_tar_members

__all__ = ["StudyPlan", "ShardError", "plan_study", "run_shard", "parse_part",
           "layout_digest", "IDENTITY_COLUMNS"]

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")

IDENTITY_COLUMNS = ("split", "shard", "group", "index", "key", "gene", "individual",
                    "population", "chrom", "tss", "strand")
"""Manifest columns that describe the samples and where they are stored (not the targets)."""

STUDY_TABLES = ("manifest.parquet", "targets.json", "splits.parquet", "config.toml",
                "build.json", "quality.json", "README.txt")
"""Files of ``DIR/shards`` besides the shards, written after them (``meta.json`` comes last)."""

CONVENTIONS = {
    "tss": "0-based position of the gene's TSS on the reference (1-based = tss + 1), as the "
           "manifest's and every group JSON's 'tss'",
    "window": "the stored sequence covers reference [tss - W // 2, tss - W // 2 + W), 0-based "
              "half-open, W = L + 2 * flank; the TSS sits at index W // 2 (W - 1 - W // 2 when "
              "reverse_complemented)",
    "sequence": "uint8 codes A, C, G, T, N = 0, 1, 2, 3, 4; haplotype 1 and 2 are the GT "
                "allele order of the VCF",
    "chrom": "as the TSS table spells it (the FASTA and VCF names are matched through aliases "
             "such as chr22 = 22)",
    "symbol": "the gene symbol from the TSS table (empty when the table has none)",
    "Y": "log expression as given by the expression matrix; Z and P: per-gene z-score and "
         "percentile (0-100) over the target_reference individuals",
}
"""Coordinate and value conventions, written into meta.json and README.txt beside the files."""


class ShardError(ValueError):
    """The study cannot be sharded as configured; the message says what to fix."""


@dataclass
class StudyPlan:
    """What a study's shards hold, decided before any sequence is built.

    Attributes
    ----------
    manifest : pl.DataFrame
        One row per sample: split, shard (path relative to DIR/shards), group, index (row in the
        group), key, gene, individual, population, chrom, tss (0-based), strand, Y, Z, P (the
        primary targets); once :func:`run_shard` has fingerprinted the build, also the further
        target sets' columns, build (the sequence build) and targets_build
        (:func:`prep.retarget.with_targets`).
    genes : pl.DataFrame
        name, chrom, tss, strand of every gene in the manifest, in build order.
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
        """Shard paths relative to DIR/shards, in build order (split, then number)."""
        return self.manifest["shard"].unique(maintain_order=True).to_list()


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


def _drop(drops: dict, reason: str, items: list) -> None:
    if items:
        drops[reason] = {"count": len(items), "examples": sorted(map(str, items))[:5]}


def plan_study(hcfg: HaplotypesConfig, scfg: ShardConfig, workdir: str | os.PathLike) -> StudyPlan:
    """Join TSSs, expression, VCF samples and splits into the list of samples to shard.

    Raises
    ------
    ShardError
        Inputs that leave nothing to shard, contigs missing from the FASTA or VCF, unknown
        samples; each names the file and what to fix. Raised before anything is written.
    """
    from hapflow.names import gene_key
    from prep.expression_files import read_expression
    from prep.reference import Reference
    from prep.regions import read_tss_table
    from prep.splits import (
        population_split,
        random_split,
        read_paper_splits,
        read_samples,
        read_splits,
        unseen_gene_split,
    )
    from prep.targets import compute_targets
    from prep.vcf_files import VcfSet

    for what, value in (("reference", hcfg.reference), ("vcf", hcfg.vcf), ("tss", hcfg.tss)):
        if not value:
            raise ShardError(f"[haplotypes] {what} is not set; prep.shard needs it")
    expression_path = scfg.expression or str(Path(workdir) / "expression" / "expression.parquet")
    if not Path(expression_path).exists():
        raise ShardError(
            f"expression matrix {expression_path} does not exist: set [shard] expression or run "
            "`python -m prep.expression` with the same --workdir first"
        )
    drops: dict = {}
    tss = read_tss_table(hcfg.tss, one_based=hcfg.tss_one_based)
    matrix = read_expression(expression_path, scfg.expression_format)
    vcfs = VcfSet(hcfg.vcf)  # opened once: samples here, contigs in _check_contigs
    vcf_samples = set(vcfs.samples)
    wanted = read_sample_list(hcfg.samples, hcfg.samples_file)
    expr_individuals = [c for c in matrix.columns if c != "gene"]
    if wanted is not None:
        unknown = [s for s in wanted if s not in vcf_samples]
        if unknown:
            raise ShardError(
                f"{len(unknown)} requested sample(s) are not in {hcfg.vcf}, e.g. {unknown[:5]}"
            )
        expr_individuals = [s for s in expr_individuals if s in set(wanted)]
        _drop(drops, "requested but without expression", [s for s in wanted
                                                             if s not in set(matrix.columns)])
    _drop(drops, "individual has expression but is not in the VCF",
          [s for s in expr_individuals if s not in vcf_samples])
    _drop(drops, "individual is in the VCF but has no expression",
          sorted(vcf_samples - set(expr_individuals) - ({"gene"})) if wanted is None else [])
    individuals = sorted(s for s in expr_individuals if s in vcf_samples)
    if not individuals:
        raise ShardError(
            f"no individual is both in the expression matrix {expression_path} and the VCF "
            f"{hcfg.vcf}; check that both use the same sample ids"
        )

    # genes: TSS table x expression matrix, matched by id without version (case-insensitive)
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
    tss = tss.with_columns(
        pl.col("_k").replace_strict(matrix_keys, return_dtype=pl.Utf8).alias("gene")
    )
    _check_contigs(tss, hcfg, Reference, vcfs)
    matrix = matrix.filter(pl.col("gene").is_in(tss["gene"].to_list())).select(
        ["gene", *individuals]
    )

    # splits
    genes = tss["gene"].to_list()
    if scfg.splits == "random":
        splits = random_split(genes, individuals, n_test=scfg.n_test,
                              test_fraction=None if scfg.n_test is not None else scfg.test_fraction,
                              val_fraction=scfg.val_fraction, seed=scfg.seed)
    elif scfg.splits == "population":
        if not scfg.samples_table:
            raise ShardError("[shard] splits = 'population' needs samples_table (sample,population)")
        splits = population_split(genes, read_samples(scfg.samples_table), scfg.population,
                                  individuals=individuals, val_fraction=scfg.val_fraction,
                                  seed=scfg.seed)
    elif scfg.splits == "unseen":
        if not scfg.test_chroms:
            raise ShardError("[shard] splits = 'unseen' needs test_chroms, e.g. ['chr22']")
        splits = unseen_gene_split(dict(zip(genes, tss["chrom"], strict=True)), scfg.test_chroms,
                                   individuals, val_fraction=scfg.val_fraction, seed=scfg.seed)
    else:
        if not scfg.splits_file:
            raise ShardError(f"[shard] splits = '{scfg.splits}' needs splits_file")
        if scfg.splits == "paper":
            if not scfg.gene_classes:
                raise ShardError("[shard] splits = 'paper' needs gene_classes (gene_class.csv)")
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
    targets = compute_targets(matrix, splits, reference=scfg.target_reference)
    nan = targets.filter(pl.col("Y").is_nan() | pl.col("Z").is_nan() | pl.col("P").is_nan())
    _drop(drops, "target is NaN", [f"{g}/{i}" for g, i in zip(nan["gene"], nan["individual"],
                                                                strict=True)])
    targets = targets.filter(~(pl.col("Y").is_nan() | pl.col("Z").is_nan() | pl.col("P").is_nan()))

    populations = {}
    if scfg.samples_table:
        table = read_samples(scfg.samples_table)
        populations = dict(zip(table["sample"], table["population"], strict=True))
    order = _gene_order(tss, hcfg)
    manifest = _assign_shards(targets, order, populations, scfg)
    genes_df = order.filter(pl.col("gene").is_in(manifest["gene"].unique().to_list()))
    used = targets.select("gene", "individual", "split")
    return StudyPlan(manifest=manifest, genes=genes_df, individuals=individuals, splits=used,
                     drops=drops)


def _check_contigs(tss: pl.DataFrame, hcfg: HaplotypesConfig, reference_cls, vcfs) -> None:
    from prep.contigs import ContigError
    from prep.vcf_files import check_vcf_file

    ref = reference_cls(hcfg.reference)
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


def _match_split_genes(splits: pl.DataFrame, tss: pl.DataFrame, drops: dict) -> pl.DataFrame:
    """Map split-file gene names (ids or symbols, any case) to the expression matrix's ids."""
    from hapflow.names import gene_key

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


def _gene_order(tss: pl.DataFrame, hcfg: HaplotypesConfig) -> pl.DataFrame:
    """Genes in build order: contigs as first met in the TSS table, then by TSS."""
    contig_rank = {c: i for i, c in enumerate(tss["chrom"].unique(maintain_order=True))}
    return (
        tss.with_columns(pl.col("chrom").replace_strict(contig_rank, return_dtype=pl.Int64)
                         .alias("_c"))
        .sort(["_c", "tss", "gene"])
        .select("gene", "name", "symbol", "chrom", "tss", "strand")
    )


def _assign_shards(targets, order, populations, scfg: ShardConfig) -> pl.DataFrame:
    rank = {g: i for i, g in enumerate(order["gene"])}
    info = {r["gene"]: r for r in order.iter_rows(named=True)}
    rows = []
    for split in SPLITS:
        part = targets.filter(pl.col("split") == split)
        if part.height == 0:
            continue
        part = part.with_columns(
            pl.col("gene").replace_strict(rank, return_dtype=pl.Int64).alias("_r")
        ).sort(["_r", "individual"])
        shard, in_shard, group_no = 0, 0, {}
        for (gene,), gdf in part.group_by(["gene"], maintain_order=True):
            inds = gdf["individual"].to_list()
            size = scfg.group_size or len(inds)
            for lo in range(0, len(inds), size):
                chunk = gdf.slice(lo, size)
                if in_shard and in_shard + chunk.height > scfg.shard_samples:
                    shard, in_shard = shard + 1, 0
                g = group_no.get(gene, 0)
                group_no[gene] = g + 1
                key = group_key(gene, split, g)
                gi = info[gene]
                for j, r in enumerate(chunk.iter_rows(named=True)):
                    rows.append({
                        "split": split, "shard": f"{split}/shard-{shard:06d}.tar", "group": key,
                        "index": j, "key": sample_key(gene, r["individual"]), "gene": gene,
                        "symbol": gi["symbol"] or None, "individual": r["individual"],
                        "population": populations.get(r["individual"], "NA"),
                        "chrom": gi["chrom"], "tss": gi["tss"], "strand": gi["strand"],
                        "Y": r["Y"], "Z": r["Z"], "P": r["P"],
                    })
                in_shard += chunk.height
    return pl.DataFrame(rows, schema={
        "split": pl.Utf8, "shard": pl.Utf8, "group": pl.Utf8, "index": pl.Int32, "key": pl.Utf8,
        "gene": pl.Utf8, "symbol": pl.Utf8, "individual": pl.Utf8, "population": pl.Utf8,
        "chrom": pl.Utf8,
        "tss": pl.Int64, "strand": pl.Utf8, "Y": pl.Float64, "Z": pl.Float64, "P": pl.Float64,
    })


def _readme_text(scfg: ShardConfig) -> str:
    """README.txt of DIR/shards: what each file holds and its conventions, in plain words."""
    lines = [
        "hapflow study shards (written by `python -m prep.shard`; format: prep.shard_format)",
        "",
        "Files",
        "  {split}/shard-NNNNNN.tar  WebDataset shards: per group of individuals of one gene, "
        "the haplotypes (zstd) and a JSON",
        "  manifest.parquet  one row per (gene, individual): split, shard, group, index, key, "
        "gene, symbol, individual, population, chrom, tss, strand, the targets Y, Z, P "
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
        f"  flank: {scfg.flank} extra real bases each side of the L-bp window",
        "",
        "Check the folder with `python -m prep.verify DIR/shards`.",
        "",
    ]
    return "\n".join(lines)


def _write_parquet(df: pl.DataFrame, path: Path) -> None:
    import io

    buf = io.BytesIO()
    df.write_parquet(buf, compression="zstd", statistics=False)
    atomic_write_bytes(path, buf.getvalue())


def run_shard(
    hcfg: HaplotypesConfig,
    scfg: ShardConfig,
    workdir: str | os.PathLike,
    part: tuple[int, int] = (1, 1),
    overwrite: bool = False,
) -> dict:
    """Write the shards of one part of a study. Returns a summary dict.

    Steps: plan (tables only; errors before any write) -> fingerprint the sequence build
    (settings, input checksums and sample layout, :mod:`prep.fingerprint`) and the targets ->
    refuse, before writing anything, if the folder holds shards of another build (unless
    ``overwrite``) -> when every shard already holds this build: rewrite the targets table if
    the targets changed, else nothing -> manifest (with targets), targets.json, splits, config,
    build.json -> build and write the missing shards of this part -> when every shard exists,
    quality.json and meta.json.

    Raises
    ------
    ShardError
        Besides bad inputs: shards of another build in ``DIR/shards`` without ``overwrite`` (the
        message lists what changed), or parts of different builds at finalisation.
    """
    from hapflow.progress import progress as tqdm  # a bar on a terminal, plain lines in logs

    length = validate_length(hcfg.length)
    out_dir = Path(workdir) / "shards"
    plan = plan_study(hcfg, scfg, workdir)
    _log_plan(plan)
    from prep.retarget import with_targets, write_targets

    cache = Path(workdir) / ".cache"
    components = build_components(
        {"haplotypes": hcfg, "shard": scfg}, _input_files(hcfg, scfg, workdir), FORMAT_VERSION,
        cache_dir=cache, ignore=TARGET_SETTINGS, samples=layout_digest(plan.manifest))
    build = fingerprint(components)
    plan.manifest, targets = with_targets(plan.manifest.with_columns(pl.lit(build).alias("build")),
                                          scfg, workdir, build, cache)

    k, n = part
    mine = [s for i, s in enumerate(plan.shards) if i % n == k - 1]
    planned = set(plan.shards)
    on_disk = sorted(str(p.relative_to(out_dir)) for p in out_dir.glob("*/shard-*.tar")) \
        if out_dir.exists() else []
    stale = [s for s in on_disk if _shard_build(out_dir / s) != build]
    if stale and not overwrite:
        raise ShardError(_stale_message(out_dir, stale, components, cache))
    done_before = {s for s in on_disk if s in planned and s not in stale}
    if overwrite:
        done_before -= set(mine)
    todo = [s for s in mine if s not in done_before]
    if not todo and all(s in done_before for s in plan.shards) \
            and _meta_build(out_dir) == build:
        summary = {"shards": len(plan.shards), "built": 0, "part": f"{k}/{n}",
                   "samples": plan.manifest.height, "build": build}
        if _targets_build(out_dir) != targets["targets_build"]:
            try:
                write_targets(out_dir, plan.manifest, targets)
            except OSError as err:
                raise ShardError(os_error_message(err, out_dir / "manifest.parquet")) from None
            log.info("The %d shard(s) in %s already hold this build (%s); only the targets "
                     "changed, so the targets table (manifest.parquet, targets.json) was "
                     "rewritten and the shards were left alone", len(plan.shards), out_dir, build)
            return {**summary, "retargeted": True}
        log.info("Nothing to do: the %d shard(s) in %s already hold this build (%s) of the same "
                 "settings and inputs; --overwrite rebuilds them", len(plan.shards), out_dir,
                 build)
        return {**summary, "nothing_to_do": True}

    try:
        _remember_build(cache, build, components)
        out_dir.mkdir(parents=True, exist_ok=True)
        if stale:
            log.info("Removing %d shard(s) of another build from %s (--overwrite)", len(stale),
                     out_dir)
        if stale or (overwrite and todo):
            _remove_tables(out_dir)  # no table may describe shards that are being rebuilt
        for s in stale + (mine if overwrite else []):
            (out_dir / s).unlink(missing_ok=True)
        for s in mine:  # temp files of killed runs (this part's shards only; never a live one's)
            remove_stale_temps(out_dir / s)
        log.info("Part %d/%d: %d shard(s), %d already written, %d to build (build %s)", k, n,
                 len(mine), len(mine) - len(todo), len(todo), build)
        if todo:
            _build_shards(plan, set(todo), hcfg, scfg, out_dir, length, tqdm, build)
        summary = {"shards": len(plan.shards), "built": len(todo), "part": f"{k}/{n}",
                   "samples": plan.manifest.height, "build": build}
        if all((out_dir / s).exists() for s in plan.shards):
            _finalize(plan, hcfg, scfg, out_dir, workdir, build, components, targets)
            summary["finalized"] = True
        else:
            log.info("Other parts' shards are still missing; the last part to finish writes "
                     "the tables (manifest.parquet, ...) and meta.json")
    except OSError as err:
        raise ShardError(os_error_message(err, out_dir)) from None
    return summary


def _remember_build(cache: Path, build: str, components: dict) -> None:
    """Keep what ``build`` is made of in ``DIR/.cache/builds`` until the study's build.json
    exists, so a refused re-run over an unfinished study can still say what changed."""
    atomic_write_text(cache / "builds" / f"{build}.json",
                      json.dumps({"build": build, "components": components}, indent=1) + "\n")


def _remove_tables(out_dir: Path) -> None:
    """Remove the study's tables, then meta.json (never a table without meta.json)."""
    for name in (*STUDY_TABLES, "meta.json"):
        (out_dir / name).unlink(missing_ok=True)


def _input_files(hcfg: HaplotypesConfig, scfg: ShardConfig, workdir) -> dict[str, str | None]:
    """Every input file whose content decides the shards' bytes (name -> path or None).

    The expression matrices are not among them: their values are targets (targets.json), and
    which samples they give is in the layout digest (:func:`layout_digest`).
    """
    from prep.vcf_files import VcfSet

    files = [str(f) for f in VcfSet(hcfg.vcf).files] if hcfg.vcf else []
    vcfs = {"vcf": files[0]} if len(files) == 1 else {
        f"vcf:{os.path.basename(f)}": f for f in files}
    return {
        "reference": hcfg.reference, **vcfs, "tss": hcfg.tss,
        "samples_file": hcfg.samples_file,
        "splits_file": scfg.splits_file, "gene_classes": scfg.gene_classes,
        "samples_table": scfg.samples_table,
    }


def layout_digest(manifest: pl.DataFrame) -> str:
    """sha256 (hex) of the manifest's identity columns (:data:`IDENTITY_COLUMNS`), row by row.

    Equal digests mean the same samples in the same splits, groups and shards.
    """
    text = manifest.select(IDENTITY_COLUMNS).write_csv()
    return hashlib.sha256(text.encode()).hexdigest()


def _targets_build(out_dir: Path) -> str | None:
    """The targets fingerprint of the manifest on disk (None: none or unreadable)."""
    try:
        column = pl.read_parquet(out_dir / "manifest.parquet", columns=["targets_build"])
    except Exception:  # noqa: BLE001 - missing file or column: polars raises several types
        return None
    return column["targets_build"][0] if column.height else None


def _shard_build(path: Path) -> str | None:
    """The build fingerprint recorded in a shard's first group (None: none or unreadable)."""
    try:
        for sample in read_tar_members(path, want=lambda _k, ext: ext == "json"):
            return json.loads(sample["json"]).get("build")
    except (ShardFormatError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return None


def _meta_build(out_dir: Path) -> str | None:
    try:
        return json.loads((out_dir / "meta.json").read_text()).get("build")
    except (OSError, json.JSONDecodeError):
        return None


def _stale_message(out_dir: Path, stale: list[str], components: dict,
                   cache: Path | None = None) -> str:
    old_build = _shard_build(out_dir / stale[0])
    old = None
    candidates = [out_dir / "build.json"]
    if cache is not None and old_build:
        candidates.append(cache / "builds" / f"{old_build}.json")
    for path in candidates:
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if old_build is None or record.get("build") == old_build:
            old = record.get("components")
            break
    changes = describe_changes(old, components)
    return (
        f"{out_dir} holds {len(stale)} shard(s) (e.g. {stale[0]}) built from other settings or "
        "inputs than this run's, so they cannot be resumed:\n  - " + "\n  - ".join(changes)
        + "\nRe-run with --overwrite to rebuild them, or use another --workdir to keep both."
    )


STALE_TEMP_SECONDS = 3600
"""A temp shard of another host is removed only when untouched this long (its writer is gone)."""


def remove_stale_temps(shard: Path) -> None:
    """Remove temp files of killed writers of ``shard``; never a live writer's.

    Temp names are ``.{name}.{host}.{pid}.{token}.tmp`` (:class:`ShardWriter`): a temp file of
    this host is stale when its process is gone; one of another host (a SLURM requeue on another
    node) when it has not been written for :data:`STALE_TEMP_SECONDS`.
    """
    import socket
    import time

    host = socket.gethostname().replace(".", "-").replace("/", "-")
    for tmp in shard.parent.glob(f".{shard.name}.*.tmp"):
        parts = tmp.name[len(shard.name) + 2: -len(".tmp")].rsplit(".", 2)
        try:
            age = time.time() - tmp.stat().st_mtime
        except FileNotFoundError:
            continue
        if len(parts) == 3 and parts[0] == host and parts[1].isdigit():
            alive = _pid_alive(int(parts[1]))
        else:
            alive = age < STALE_TEMP_SECONDS
        if not alive:
            tmp.unlink(missing_ok=True)
        else:
            log.info("Leaving %s: another writer may still be building it", tmp)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # our own earlier writer of this shard has been aborted
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _build_shards(plan, todo, hcfg, scfg, out_dir, length, tqdm, build):
    import numba

    from prep.builder import HaplotypeBuilder

    if scfg.workers > 0:
        numba.set_num_threads(min(scfg.workers, numba.config.NUMBA_NUM_THREADS))
    workers = scfg.workers or os.cpu_count() or 1
    width = length + 2 * scfg.flank
    manifest = plan.manifest.filter(pl.col("shard").is_in(list(todo)))
    groups_per_shard = manifest.group_by("shard").agg(pl.col("group").n_unique())
    remaining = dict(zip(groups_per_shard["shard"], groups_per_shard["group"], strict=True))
    genes = plan.genes.filter(pl.col("gene").is_in(manifest["gene"].unique().to_list()))
    builder = HaplotypeBuilder(
        hcfg.reference, hcfg.vcf, plan.individuals, snps_only=hcfg.snps_only,
        unphased=hcfg.unphased, ref_mismatch=hcfg.ref_mismatch, seed=hcfg.seed,
    )
    row_of = {s: i for i, s in enumerate(plan.individuals)}
    per_batch = max(1, (scfg.batch_mb << 20) // (2 * len(plan.individuals) * width))
    by_gene = manifest.partition_by("gene", as_dict=True, maintain_order=True)
    writers: dict[str, ShardWriter] = {}
    # one output buffer for every batch: fresh pages would cost more than building them
    buffer = np.empty((min(per_batch, genes.height), len(plan.individuals), 2, width), np.uint8)
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        with tqdm(total=genes.height, unit="gene", desc="shards", disable=None) as bar:
            for chrom_df in genes.partition_by("chrom", maintain_order=True):
                chrom = chrom_df["chrom"][0]
                for lo in range(0, chrom_df.height, per_batch):
                    batch = chrom_df.slice(lo, per_batch)
                    minus = (batch["strand"] == "-").to_numpy() & hcfg.reverse_minus
                    tss = batch["tss"].to_numpy()
                    out = buffer[: batch.height]
                    res = builder.fixed(chrom, tss, width, minus, out=out)
                    for b, gene in enumerate(batch["gene"]):
                        ref = builder.reference.fetch(chrom, int(tss[b]) - width // 2,
                                                      int(tss[b]) - width // 2 + width)
                        if minus[b]:
                            ref = reverse_complement(ref)
                        gene_rows = by_gene[(gene,)]
                        _write_gene(gene, gene_rows, res, b, ref, row_of, writers, remaining,
                                    out_dir, scfg, length, width, bool(minus[b]), pool, build)
                        bar.update(1)
    except BaseException:
        _abort_all(writers)
        raise
    finally:
        pool.shutdown(cancel_futures=True)
        builder.close()
    assert not writers, f"shards left open: {sorted(writers)}"


def _abort_all(writers: dict[str, ShardWriter]) -> None:
    """Abort every open writer and remove its temp file, whatever fails on the way (a full disk
    makes closing the tar fail too): one failing abort must not leave the others' files."""
    for shard, w in list(writers.items()):
        try:
            w.abort()
        except Exception as err:  # noqa: BLE001 - keep aborting the others
            log.debug("Aborting the writer of %s: %s", shard, err)
        finally:
            fh = getattr(w, "_fh", None)
            if fh is not None and not fh.closed:
                try:
                    fh.close()
                except OSError:
                    pass
            tmp = getattr(w, "_tmp", None)
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
    writers.clear()


def _write_gene(gene, rows, res, b, ref, row_of, writers, remaining, out_dir, scfg, length,
                width, minus, pool, build):
    groups = rows.partition_by("group", maintain_order=True)
    seqs = res.seqs[b]  # (n_individuals, 2, W)
    packed_ref = encode_reference(ref)
    counts = {k: v[b] for k, v in res.counts.items()}
    jobs = []
    for g in groups:
        idx = np.array([row_of[i] for i in g["individual"]], dtype=np.int64)
        jobs.append(pool.submit(encode_group, seqs[idx], ref, scfg.compression_level))
    for g, job in zip(groups, jobs, strict=True):
        shard = g["shard"][0]
        idx = [row_of[i] for i in g["individual"]]
        first = g.row(0, named=True)
        meta = {
            "build": build, "gene": gene, "chrom": first["chrom"],
            "tss": first["tss"], "strand": first["strand"], "split": first["split"], "length": length,
            "flank": scfg.flank, "window": width,
            "tss_index": (width - 1 - width // 2) if minus else width // 2,
            "reverse_complemented": minus,
            "n_variants": int(res.n_variants[b]), "n_ref_mismatch": int(res.n_ref_mismatch[b]),
            "individuals": g["individual"].to_list(), "populations": g["population"].to_list(),
            "applied": counts["applied"][idx].tolist(),
            "missing_genotypes": int(counts["missing"][idx].sum()),
            "overlap_skipped": int(counts["overlap_skipped"][idx].sum()),
        }
        blob = job.result()
        try:
            if shard not in writers:
                writers[shard] = ShardWriter(out_dir / shard)
            w = writers[shard]
            w.add_reference(gene, packed_ref)
            w.add_group(first["group"], blob, meta)
            remaining[shard] -= 1
            if remaining[shard] == 0:
                w.close()  # stays in writers until renamed: a failing close is aborted too
                writers.pop(shard)
        except OSError as err:
            raise ShardError(os_error_message(err, out_dir / shard)) from None


def _log_plan(plan: StudyPlan) -> None:
    m = plan.manifest
    for split in SPLITS:
        s = m.filter(pl.col("split") == split)
        if s.height:
            log.info("%s: %d genes, %d individuals, %d samples", split, s["gene"].n_unique(),
                     s["individual"].n_unique(), s.height)
    for reason, d in plan.drops.items():
        log.info("Left out: %d (%s), e.g. %s", d["count"], reason, ", ".join(d["examples"][:3]))


def _finalize(plan, hcfg, scfg, out_dir, workdir, build, components, targets=None) -> None:
    """The study's tables, quality.json and, last, meta.json, once every shard exists (re-reads
    the shards' metadata).

    Every group must carry this run's build fingerprint: ``--part`` jobs run with different
    settings or inputs refuse to finalise together (before anything is written). ``targets``
    (the record of :func:`prep.retarget.with_targets`) writes manifest.parquet and
    targets.json; ``None`` leaves them as they are.
    """
    import importlib.metadata as md

    from prep.retarget import write_targets

    gene_stats: dict[str, dict] = {}
    symbols = dict(zip(plan.genes["gene"], plan.genes["symbol"], strict=True)) \
        if "symbol" in plan.genes.columns else {}
    shard_info = {}
    for shard in plan.shards:
        path = out_dir / shard
        n = 0
        for sample in read_tar_members(path, want=lambda _k, ext: ext == "json"):
            meta = decode_meta(sample["json"], f"shard {path}: member {sample['__key__']}.json")
            if meta.get("build") != build:
                raise ShardError(
                    f"shard {path} was written by build {meta.get('build')}, this part by build "
                    f"{build}: the --part jobs ran with different settings or inputs. Re-run "
                    "every part with the same config and inputs (--overwrite rebuilds the "
                    "other build's shards)."
                )
            n += len(meta["individuals"])
            st = gene_stats.setdefault(meta["gene"], {
                "symbol": symbols.get(meta["gene"]),
                "chrom": meta["chrom"], "tss": meta["tss"], "variants_in_window":
                meta["n_variants"], "ref_mismatches": meta["n_ref_mismatch"],
                "missing_genotypes": 0, "individuals": 0})
            st["missing_genotypes"] += meta["missing_genotypes"]
            st["individuals"] += len(meta["individuals"])
        shard_info[shard] = {"sha256": file_sha256(path), "bytes": path.stat().st_size, "samples": n}
    m = plan.manifest
    per_split = {
        s: {"genes": m.filter(pl.col("split") == s)["gene"].n_unique(),
            "individuals": m.filter(pl.col("split") == s)["individual"].n_unique(),
            "samples": m.filter(pl.col("split") == s).height,
            "shards": m.filter(pl.col("split") == s)["shard"].n_unique()}
        for s in SPLITS
    }
    no_variant = [g for g, st in gene_stats.items() if st["variants_in_window"] == 0]
    quality = {"splits": per_split, "dropped": plan.drops,
               "genes_without_variants": {"count": len(no_variant), "genes": sorted(no_variant)},
               "genes": dict(sorted(gene_stats.items()))}
    if targets is not None:
        write_targets(out_dir, plan.manifest, targets)
    _write_parquet(plan.splits, out_dir / "splits.parquet")
    save_config({"haplotypes": hcfg, "shard": scfg}, out_dir / "config.toml")
    atomic_write_text(out_dir / "build.json",
                      json.dumps({"build": build, "components": components}, indent=1) + "\n")
    atomic_write_text(out_dir / "quality.json", json.dumps(quality, indent=1) + "\n")
    atomic_write_text(out_dir / "README.txt", _readme_text(scfg))
    inputs = {name: {"path": os.path.basename(p), "sha256": components["inputs"][name]}
              for name, p in _input_files(hcfg, scfg, workdir).items() if p}
    # the targets (and their matrices' checksums) are described by targets.json, which a
    # re-target rewrites; meta.json describes the sequences
    shard_settings = {k: v for k, v in config_to_dict(scfg).items() if k not in TARGET_SETTINGS}
    versions = {}
    for pkg in ("hapflow", "numpy", "numba", "cyvcf2", "pysam", "polars", "zstandard"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    total = sum(v["bytes"] for v in shard_info.values())
    meta = {
        "format": FORMAT_VERSION,
        "build": build,
        "config": {"haplotypes": config_to_dict(hcfg), "shard": shard_settings},
        "samples_digest": components["samples"], "targets": "targets.json",
        "versions": versions, "inputs": inputs,
        "counts": {"samples": m.height, "genes": m["gene"].n_unique(),
                   "individuals": m["individual"].n_unique(), "shards": len(shard_info),
                   "bytes": total, "bytes_per_sample": total / max(m.height, 1)},
        "splits": per_split, "shards": shard_info, "conventions": CONVENTIONS,
    }
    atomic_write_text(out_dir / "meta.json", json.dumps(meta, indent=1) + "\n")
    log.info("Wrote %d shards (%d samples, %.0f bytes per diploid sample) to %s",
             len(shard_info), m.height, total / max(m.height, 1), out_dir)
    n_missing = sum(s["missing_genotypes"] for s in gene_stats.values())
    n_mis = sum(s["ref_mismatches"] for s in gene_stats.values())
    log.info("Data quality: %d genes; %d missing genotypes kept the reference; %d REF "
             "mismatches skipped; details in %s", len(gene_stats), n_missing, n_mis,
             out_dir / "quality.json")
    if no_variant:
        names = [f"{symbols.get(g) or g}" for g in no_variant]
        log.warning(
            "%d of %d genes have no variant in their %d bp window (e.g. %s): every individual "
            "gets the reference sequence there, so a sequence model cannot tell individuals "
            "apart on them; check that the VCF covers these regions (listed in %s under "
            "genes_without_variants)", len(no_variant), len(gene_stats), hcfg.length,
            ", ".join(names[:5]), out_dir / "quality.json")
