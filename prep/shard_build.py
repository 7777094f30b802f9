"""Building a study's shards: every gene's record (reference span + edits), written.

:func:`build_shards` takes the genes of the shards to build in build order, per contig in
batches of nearby genes. Per batch, :meth:`prep.builder.HaplotypeBuilder.edits` reads the VCF
once (only the study's individuals are parsed) and records every haplotype's edits against each
gene's reference span of ``W = [haplotypes] length + 2 x [shard] flank`` bases around the TSS
(numba threads over haplotypes, :func:`prep.edits.gene_edits`); no haplotype's bases are ever
built. Per gene, the rows of its individuals are kept (:func:`prep.edits.select_haplotypes`:
the gene's individuals of every split, sorted), its members are encoded on a thread pool
(:func:`prep.gene_record.encode_gene`: the packed span, zstd of the edits, the JSON) while the
next batch's edits are recorded, and written into its shard in build order
(:class:`prep.shard_tar.ShardWriter`). A shard is closed (renamed to its final name) as soon as
its last gene is in; on any error every open writer is aborted and its temp file removed.

Memory (S: the study's individuals; R: VCF records per base, about 1/35 for 1000 Genomes): the
batch's genotypes, 4 x S bytes per record of the batch's span (``[shard] batch_mb`` sizes
batches for R <= 1/16: the TSSs of a batch lie within ``batch_mb / (4 S / 16) - W`` bases of
each other, at least one gene per batch), plus per gene in flight (the batch being recorded
and the one being encoded) its span (~W bytes), edit table and bit matrix (2 S x E / 8 bytes
for E distinct edits, E <= the records in its span), plus the walk's scratch of one gene (16
bytes x 2S x the most ALT alleles one haplotype carries there). Nothing grows with the genes
of the study or with S x W.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numba
import numpy as np
import polars as pl

from hapflow.io import os_error_message
from hapflow.progress import progress
from hapflow.sections import HaplotypesConfig, ShardConfig
from prep.builder import HaplotypeBuilder, RegionEdits
from prep.edits import select_haplotypes
from prep.gene_record import encode_gene
from prep.shard_format import safe_key
from prep.shard_plan import ShardError, StudyPlan
from prep.shard_tar import ShardWriter

__all__ = ["build_shards", "gene_batches", "RECORDS_PER_BASE"]

log = logging.getLogger(__name__)

RECORDS_PER_BASE = 1 / 16
"""VCF records per base that ``[shard] batch_mb`` is sized for (1000 Genomes: about 1/35)."""


class _Writers:
    """The open shard writers of one build; a shard closes when its last gene is in."""

    def __init__(self, out_dir: Path, remaining: dict[str, int]):
        self.out_dir = out_dir
        self.remaining = remaining  # shard -> genes still to write
        self.open: dict[str, ShardWriter] = {}

    def add(self, shard: str, key: str, members: list[tuple[str, bytes]]) -> None:
        try:
            if shard not in self.open:
                self.open[shard] = ShardWriter(self.out_dir / shard)
            w = self.open[shard]
            w.add_gene(key, members)
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


def gene_batches(genes: pl.DataFrame, width: int, n_samples: int, batch_mb: int
                 ) -> list[pl.DataFrame]:
    """Cut ``genes`` (build order: contig, then TSS) into batches of nearby genes of one contig.

    A batch's TSSs lie within ``batch_mb MiB / (4 x n_samples x RECORDS_PER_BASE) - width``
    bases of each other (its genotypes then take about ``batch_mb``); every batch has at least
    one gene. Batching changes no byte of the output, only memory and VCF reads.
    """
    spread = int((batch_mb << 20) / (4 * max(n_samples, 1) * RECORDS_PER_BASE)) - width
    batches = []
    for chrom_df in genes.partition_by("chrom", maintain_order=True):
        tss = chrom_df["tss"].to_numpy()
        lo = 0
        for i in range(1, len(tss) + 1):
            if i == len(tss) or tss[i] - tss[lo] > spread:
                batches.append(chrom_df.slice(lo, i - lo))
                lo = i
    return batches


def build_shards(plan: StudyPlan, todo: list[str], hcfg: HaplotypesConfig, scfg: ShardConfig,
                 out_dir: Path, build: str) -> None:
    """Build and write the shards ``todo`` (paths relative to ``out_dir``) of ``plan``.

    Threads: ``[shard] workers`` (0: all cores) for numba and the encoding pool. Memory: see
    the module docstring.

    Raises
    ------
    ShardError
        An output that cannot be written (naming the shard); input errors met while building
        (VCF, FASTA) propagate. Either way no temp file is left.
    """
    threads = scfg.workers or os.cpu_count() or 1
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    width = hcfg.length + 2 * scfg.flank
    genes = plan.genes.filter(pl.col("shard").is_in(list(todo)))
    per_shard = genes.group_by("shard").len()
    writers = _Writers(out_dir, dict(zip(per_shard["shard"], per_shard["len"], strict=True)))
    builder = HaplotypeBuilder(
        hcfg.reference, hcfg.vcf, plan.individuals, snps_only=hcfg.snps_only,
        unphased=hcfg.unphased, ref_mismatch=hcfg.ref_mismatch, seed=hcfg.seed,
    )
    row_of = {s: i for i, s in enumerate(plan.individuals)}
    pool = ThreadPoolExecutor(max_workers=threads)
    pending: deque[tuple[str, str, Future]] = deque()  # (shard, key, members), build order
    try:
        with progress(total=genes.height, unit="gene", desc="shards", disable=None) as bar:
            for batch in gene_batches(genes, width, len(plan.individuals), scfg.batch_mb):
                regions = builder.edits(batch["chrom"][0], batch["tss"].to_numpy(), width)
                written = len(pending)  # the previous batch's genes, encoded meanwhile
                for gene, region in zip(batch.iter_rows(named=True), regions, strict=True):
                    meta, ref, edits = _gene_record(gene, region, row_of, hcfg, scfg, build)
                    pending.append((gene["shard"], safe_key(gene["gene"]), pool.submit(
                        encode_gene, meta, ref, edits, scfg.compression_level)))
                _write(pending, written, writers, bar)
            _write(pending, len(pending), writers, bar)
    except BaseException:
        writers.abort_all()
        raise
    finally:
        pool.shutdown(cancel_futures=True)
        builder.close()
    assert not writers.open, f"shards left open: {sorted(writers.open)}"


def _write(pending: deque, n: int, writers: _Writers, bar) -> None:
    """Write the first ``n`` pending genes (waiting for their encoding), in order."""
    for _ in range(n):
        shard, key, job = pending.popleft()
        writers.add(shard, key, job.result())
        bar.update(1)


def _gene_record(gene: dict, region: RegionEdits, row_of: dict[str, int],
                 hcfg: HaplotypesConfig, scfg: ShardConfig, build: str) -> tuple:
    """``(meta, ref, edits)`` of one gene's record (:func:`prep.gene_record.encode_gene`):
    the rows of its individuals only."""
    idx = np.array([row_of[i] for i in gene["individuals"]], dtype=np.int64)
    edits = select_haplotypes(region.edits, np.stack([2 * idx, 2 * idx + 1], 1).reshape(-1))
    counts = {k: v[idx] for k, v in region.counts.items()}
    meta = {
        "build": build, "gene": gene["gene"], "chrom": gene["chrom"], "tss": int(gene["tss"]),
        "strand": gene["strand"], "span_start": region.span_start,
        "tss_rel": int(gene["tss"]) - region.span_start, "length": hcfg.length,
        "flank": scfg.flank, "width": hcfg.length + 2 * scfg.flank,
        "reverse_complemented": bool(hcfg.reverse_minus and gene["strand"] == "-"),
        "individuals": list(gene["individuals"]), "applied": counts["applied"].tolist(),
        "missing_genotypes": int(counts["missing"].sum()),
        "overlap_skipped": int(counts["overlap_skipped"].sum()),
        "n_variants": region.n_variants, "n_ref_mismatch": region.n_ref_mismatch,
    }
    return meta, region.ref, edits
