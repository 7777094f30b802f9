"""Format-3 study shards for the loader tests, until ``prep.shard`` writes them (issue 17).

:func:`to_format3` rewrites a study's shards folder written by ``prep.sharding.run_shard``
(format 2: one folder per split, haplotype groups) in the layout of docs ``v3.md``: every gene's
reference span once and its individuals' edits (:meth:`prep.builder.HaplotypeBuilder.edits`,
:func:`prep.gene_record.encode_gene`) in ``shard-NNNNNN.tar`` at the top level, all splits of a
gene in one record, and ``manifest.parquet`` with exactly the contract's columns (``row`` = the
individual's row in its gene record; ``group`` and ``index`` gone). Targets, splits and every
other study table are the format-2 build's. :func:`demo_v3_shards` is the real chr22 demo study
(``configs/demo.toml``) so rewritten, built once per test session.

Minimal on purpose: at merge the fixtures switch to ``prep.shard``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from pathlib import Path

import numpy as np
import polars as pl

from hapflow.names import SPLITS
from prep.builder import HaplotypeBuilder
from prep.edits import GeneEdits
from prep.gene_record import encode_gene
from prep.shard_format import safe_key
from prep.shard_tar import ShardWriter
from tests.loader_demo import CONFIG, build_study, demo_shards

__all__ = ["to_format3", "demo_v3_shards", "demo_v3_reverse_minus", "subset_edits", "COLUMNS"]

COLUMNS = ("split", "shard", "key", "row", "gene", "symbol", "individual", "population", "chrom",
           "tss", "strand")
"""The manifest's leading columns; the targets, build and targets_build follow."""

_LOCK = threading.Lock()


def subset_edits(edits: GeneEdits, haplotypes: np.ndarray) -> GeneEdits:
    """The rows ``haplotypes`` of ``edits``, and only the edits one of them carries."""
    matrix = np.unpackbits(edits.bits[haplotypes], axis=1, count=edits.n_edits).astype(bool)
    keep = np.flatnonzero(matrix.any(axis=0))
    lengths = np.diff(edits.alt_offsets)[keep]
    offsets = np.zeros(len(keep) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    codes = np.concatenate([edits.alt_codes[edits.alt_offsets[e]:edits.alt_offsets[e + 1]]
                            for e in keep]) if len(keep) else np.zeros(0, np.uint8)
    return GeneEdits(starts=edits.starts[keep], ends=edits.ends[keep], alt_offsets=offsets,
                     alt_codes=codes.astype(np.uint8), bits=np.packbits(matrix[:, keep], axis=1))


def _gene_members(builder, rows: pl.DataFrame, hap: dict, flank: int, build: str, row_of: dict):
    """The members of one gene (all its individuals, any split) and its sorted individuals."""
    first = rows.row(0, named=True)
    individuals = sorted(set(rows["individual"].to_list()))
    width = hap["length"] + 2 * flank
    region = builder.edits(first["chrom"], np.array([first["tss"]]), width)[0]
    idx = np.array([row_of[i] for i in individuals], np.int64)
    haplotypes = np.stack([2 * idx, 2 * idx + 1], axis=1).reshape(-1)
    meta = {"build": build, "gene": first["gene"], "chrom": first["chrom"],
            "tss": int(first["tss"]), "strand": first["strand"], "span_start": region.span_start,
            "tss_rel": int(first["tss"]) - region.span_start, "length": hap["length"],
            "flank": flank, "width": width,
            "reverse_complemented": bool(first["strand"] == "-" and hap["reverse_minus"]),
            "individuals": individuals,
            "applied": region.counts["applied"][idx].tolist(),
            "missing_genotypes": int(region.counts["missing"][idx].sum()),
            "overlap_skipped": int(region.counts["overlap_skipped"][idx].sum()),
            "n_variants": region.n_variants, "n_ref_mismatch": region.n_ref_mismatch}
    return encode_gene(meta, region.ref, subset_edits(region.edits, haplotypes)), individuals


def to_format3(shards: Path, reverse_minus: bool | None = None) -> Path:
    """Rewrite the format-2 shards folder ``shards`` as format 3, in place; returns it.

    ``reverse_minus``: store minus-strand genes reverse-complemented (or not) whatever the
    format-2 build did (its config in meta.json says so afterwards).
    """
    shards = Path(shards)
    meta = json.loads((shards / "meta.json").read_text())
    hap, cfg = meta["config"]["haplotypes"], meta["config"]["shard"]
    if reverse_minus is not None:
        hap["reverse_minus"] = reverse_minus
    old = pl.read_parquet(shards / "manifest.parquet")
    build = old["build"][0]
    genes = old["gene"].unique(maintain_order=True).to_list()  # build order (v2: train first)
    everyone = sorted(set(old["individual"].to_list()))
    builder = HaplotypeBuilder(hap["reference"], hap["vcf"], everyone,
                               snps_only=hap["snps_only"], unphased=hap["unphased"],
                               ref_mismatch=hap["ref_mismatch"], seed=hap["seed"])
    row_of = {s: i for i, s in enumerate(builder.samples)}
    by_gene = old.partition_by("gene", as_dict=True, maintain_order=True)
    shard_of, rows_of, files = {}, {}, {}
    n_shard, filled, writer = -1, 0, None
    for gene in genes:
        rows = by_gene[(gene,)]
        if writer is None or filled + rows.height > cfg["shard_samples"]:
            if writer is not None:
                writer.close()
            n_shard, filled = n_shard + 1, 0
            files[n_shard] = f"shard-{n_shard:06d}.tar"
            writer = ShardWriter(shards / files[n_shard])
        members, individuals = _gene_members(builder, rows, hap, cfg["flank"], build, row_of)
        for ext, data in members:
            writer.add(f"{safe_key(gene)}.{ext}", data)
        filled += rows.height
        shard_of[gene] = files[n_shard]
        rows_of[gene] = {ind: r for r, ind in enumerate(individuals)}
    writer.close()
    _write_tables(shards, old, shard_of, rows_of, meta, files)
    return shards


def _write_tables(shards: Path, old: pl.DataFrame, shard_of: dict, rows_of: dict, meta: dict,
                  files: dict) -> None:
    """The format-3 manifest (contract columns and order) and meta.json; the split folders go."""
    order = {g: i for i, g in enumerate(shard_of)}
    new = old.with_columns(
        pl.col("gene").replace_strict(shard_of).alias("shard"),
        pl.struct("gene", "individual").map_elements(
            lambda r: rows_of[r["gene"]][r["individual"]], return_dtype=pl.Int32).alias("row"),
        pl.col("split").replace_strict({s: i for i, s in enumerate(SPLITS)}).alias("_s"),
        pl.col("gene").replace_strict(order).alias("_g"),
    ).sort("_s", "_g", "individual")
    targets = [c for c in old.columns if c in ("Y", "Z", "P") or c.startswith("Y:")]
    new.select(*COLUMNS, *targets, "build", "targets_build").write_parquet(
        shards / "manifest.parquet")
    for split in SPLITS:
        shutil.rmtree(shards / split, ignore_errors=True)
    meta["format"] = 3
    meta["shards"] = {name: {"bytes": (shards / name).stat().st_size,
                             "sha256": hashlib.sha256((shards / name).read_bytes()).hexdigest()}
                      for name in files.values()}
    (shards / "meta.json").write_text(json.dumps(meta, indent=1))


def demo_v3_shards(base: Path) -> Path:
    """The chr22 demo study (configs/demo.toml) in format 3 under ``base/loader_demo_v3``,
    built once per session: 26 genes x 162 individuals (all splits) in 5 shards of at most
    1,024 samples (6, 6, 6, 6 and 2 genes)."""
    workdir = Path(base) / "loader_demo_v3"
    shards = workdir / "shards"
    with _LOCK:
        if (shards / "meta.json").exists() and json.loads(
                (shards / "meta.json").read_text()).get("format") == 3:
            return shards
        return to_format3(build_study(CONFIG, workdir))


def demo_v3_reverse_minus(base: Path) -> Path:
    """The demo study with ``[haplotypes] reverse_minus = true`` (minus-strand genes' windows
    reverse-complemented), in format 3 under ``base/loader_demo_v3_rc``, built once."""
    workdir = Path(base) / "loader_demo_v3_rc"
    shards = workdir / "shards"
    with _LOCK:
        if (shards / "meta.json").exists() and json.loads(
                (shards / "meta.json").read_text()).get("format") == 3:
            return shards
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.copytree(demo_shards(base), shards)
        return to_format3(shards, reverse_minus=True)
