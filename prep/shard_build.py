"""Building a study's shards: haplotypes of every planned sample, compressed, written.

:func:`build_shards` builds the haplotype windows of batches of genes (one VCF read per batch,
:class:`prep.builder.HaplotypeBuilder`), compresses each group against its gene's reference
window on a thread pool (:func:`prep.shard_format.encode_group`) and writes the groups into
their shards in plan order (:class:`prep.shard_tar.ShardWriter`). A shard is closed (renamed
to its final name) as soon as its last group is in; on any error every open writer is aborted
and its temp file removed.

Stored windows are ``W = L + 2 * flank`` bases of reference ``[tss - W // 2, tss - W // 2 + W)``
(0-based half-open), the TSS at index ``W // 2`` (``W - 1 - W // 2`` when reverse-complemented).
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np
import polars as pl

from hapflow.io import os_error_message
from hapflow.progress import progress
from hapflow.sections import HaplotypesConfig, ShardConfig
from prep.builder import FixedHaplotypes, HaplotypeBuilder
from prep.encoding import reverse_complement
from prep.shard_format import encode_group, encode_reference
from prep.shard_plan import ShardError, StudyPlan
from prep.shard_tar import ShardWriter

__all__ = ["build_shards"]

log = logging.getLogger(__name__)


class _Writers:
    """The open shard writers of one build; a shard closes when its last group is in."""

    def __init__(self, out_dir: Path, remaining: dict[str, int]):
        self.out_dir = out_dir
        self.remaining = remaining  # shard -> groups still to write
        self.open: dict[str, ShardWriter] = {}

    def add(self, shard: str, gene: str, packed_ref: bytes, key: str, blob: bytes,
            meta: dict) -> None:
        try:
            if shard not in self.open:
                self.open[shard] = ShardWriter(self.out_dir / shard)
            w = self.open[shard]
            w.add_reference(gene, packed_ref)
            w.add_group(key, blob, meta)
            self.remaining[shard] -= 1
            if self.remaining[shard] == 0:
                w.close()  # stays in open until renamed: a failing close is aborted too
                self.open.pop(shard)
        except OSError as err:
            raise ShardError(os_error_message(err, self.out_dir / shard)) from None

    def abort_all(self) -> None:
        """Abort every open writer and remove its temp file, whatever fails on the way (a full
        disk makes closing the tar fail too): one failing abort must not leave the others'
        files."""
        for shard, w in list(self.open.items()):
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
        self.open.clear()


@dataclass
class _Gene:
    """One gene of a built batch: its manifest rows and where its haplotypes are."""

    gene: str
    rows: pl.DataFrame
    res: FixedHaplotypes
    b: int
    """Row of the gene in ``res``."""
    ref: np.ndarray
    """The stored reference window, shape (W,), uint8 (reverse-complemented with ``minus``)."""
    minus: bool


def build_shards(plan: StudyPlan, todo: list[str], hcfg: HaplotypesConfig, scfg: ShardConfig,
                 out_dir: Path, build: str) -> None:
    """Build and write the shards ``todo`` (paths relative to ``out_dir``) of ``plan``.

    Threads: ``[shard] workers`` (0: all cores) for numba and the compression pool; memory:
    one output buffer of about ``[shard] batch_mb`` for a batch of genes.

    Raises
    ------
    ShardError
        An output that cannot be written (naming the shard); input errors met while building
        (VCF, FASTA) propagate. Either way no temp file is left.
    """
    if scfg.workers > 0:
        numba.set_num_threads(min(scfg.workers, numba.config.NUMBA_NUM_THREADS))
    width = hcfg.length + 2 * scfg.flank
    manifest = plan.manifest.filter(pl.col("shard").is_in(list(todo)))
    groups_per_shard = manifest.group_by("shard").agg(pl.col("group").n_unique())
    writers = _Writers(out_dir, dict(zip(groups_per_shard["shard"], groups_per_shard["group"],
                                         strict=True)))
    genes = plan.genes.filter(pl.col("gene").is_in(manifest["gene"].unique().to_list()))
    builder = HaplotypeBuilder(
        hcfg.reference, hcfg.vcf, plan.individuals, snps_only=hcfg.snps_only,
        unphased=hcfg.unphased, ref_mismatch=hcfg.ref_mismatch, seed=hcfg.seed,
    )
    row_of = {s: i for i, s in enumerate(plan.individuals)}
    per_batch = max(1, (scfg.batch_mb << 20) // (2 * len(plan.individuals) * width))
    by_gene = manifest.partition_by("gene", as_dict=True, maintain_order=True)
    # one output buffer for every batch: fresh pages would cost more than building them
    buffer = np.empty((min(per_batch, genes.height), len(plan.individuals), 2, width), np.uint8)
    pool = ThreadPoolExecutor(max_workers=scfg.workers or os.cpu_count() or 1)
    try:
        with progress(total=genes.height, unit="gene", desc="shards", disable=None) as bar:
            for chrom_df in genes.partition_by("chrom", maintain_order=True):
                for lo in range(0, chrom_df.height, per_batch):
                    for gene in _build_batch(builder, chrom_df.slice(lo, per_batch), hcfg,
                                             width, buffer, by_gene):
                        _write_gene(gene, row_of, writers, pool, hcfg, scfg, build)
                        bar.update(1)
    except BaseException:
        writers.abort_all()
        raise
    finally:
        pool.shutdown(cancel_futures=True)
        builder.close()
    assert not writers.open, f"shards left open: {sorted(writers.open)}"


def _build_batch(builder: HaplotypeBuilder, batch: pl.DataFrame, hcfg: HaplotypesConfig,
                 width: int, buffer: np.ndarray, by_gene: dict):
    """Build one batch of genes (one contig) into ``buffer``; yield each gene's :class:`_Gene`."""
    chrom = batch["chrom"][0]
    minus = (batch["strand"] == "-").to_numpy() & hcfg.reverse_minus
    tss = batch["tss"].to_numpy()
    res = builder.fixed(chrom, tss, width, minus, out=buffer[: batch.height])
    for b, gene in enumerate(batch["gene"]):
        lo = int(tss[b]) - width // 2
        ref = builder.reference.fetch(chrom, lo, lo + width)
        if minus[b]:
            ref = reverse_complement(ref)
        yield _Gene(gene, by_gene[(gene,)], res, b, ref, bool(minus[b]))


def _write_gene(g: _Gene, row_of: dict[str, int], writers: _Writers, pool: ThreadPoolExecutor,
                hcfg: HaplotypesConfig, scfg: ShardConfig, build: str) -> None:
    """Compress the gene's groups on the pool, then write them (and its reference window)."""
    groups = g.rows.partition_by("group", maintain_order=True)
    seqs = g.res.seqs[g.b]  # (n_individuals, 2, W)
    packed_ref = encode_reference(g.ref)
    jobs = []
    for group in groups:
        idx = np.array([row_of[i] for i in group["individual"]], dtype=np.int64)
        jobs.append(pool.submit(encode_group, seqs[idx], g.ref, scfg.compression_level))
    for group, job in zip(groups, jobs, strict=True):
        meta = _group_meta(g, group, [row_of[i] for i in group["individual"]], hcfg, scfg,
                           build)
        first = group.row(0, named=True)
        writers.add(first["shard"], g.gene, packed_ref, first["group"], job.result(), meta)


def _group_meta(g: _Gene, group: pl.DataFrame, idx: list[int], hcfg: HaplotypesConfig,
                scfg: ShardConfig, build: str) -> dict:
    """A group's JSON (before the writer adds format and checksums; :func:`check_meta`)."""
    width = hcfg.length + 2 * scfg.flank
    counts = {k: v[g.b] for k, v in g.res.counts.items()}
    first = group.row(0, named=True)
    return {
        "build": build, "gene": g.gene, "chrom": first["chrom"],
        "tss": first["tss"], "strand": first["strand"], "split": first["split"],
        "length": hcfg.length, "flank": scfg.flank, "window": width,
        "tss_index": (width - 1 - width // 2) if g.minus else width // 2,
        "reverse_complemented": g.minus,
        "n_variants": int(g.res.n_variants[g.b]), "n_ref_mismatch": int(g.res.n_ref_mismatch[g.b]),
        "individuals": group["individual"].to_list(), "populations": group["population"].to_list(),
        "applied": counts["applied"][idx].tolist(),
        "missing_genotypes": int(counts["missing"][idx].sum()),
        "overlap_skipped": int(counts["overlap_skipped"][idx].sum()),
    }
