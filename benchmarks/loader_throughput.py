"""Loader throughput: hapflow shards against .npy WebDataset shards, a naive loader and GenVarLoader.

Run from the repository root (about 8 minutes on 2 busy cores; ``--quick`` about 2)::

    python -m venv --system-site-packages PEERS          # once: the peers' own venv (below)
    PEERS/bin/pip install genvarloader pyconsensus-rs
    python benchmarks/loader_throughput.py --gvl-python PEERS/bin/python
    python benchmarks/loader_throughput.py --quick --tools hapflow,npy
    python benchmarks/loader_throughput.py --memory      # one loading process's memory

``PEERS`` is any folder: GenVarLoader 0.43 pins polars<2 while hapflow runs on polars 2, so the
peers live in a virtual environment of their own that also sees this interpreter's packages.

Every tool yields batches of B = 8 diploid windows, (8, 2, L) bytes, at L = 49,152 and 196,608,
with 0, 1 and 2 DataLoader workers, from the same genotypes and regions: the real chr20 data in
``data/chr20_extra`` (300 phased 1000 Genomes samples with indels, the GRCh37 slice
20:1,000,001-2,000,000), every TSS of the bundled table whose window fits inside the real
sequence, window [tss - L // 2, tss - L // 2 + L) (0-based half-open). chr20 has no expression
data, so this benchmark draws a seeded standard-normal expression matrix (genes x samples) to
fill the targets; values do not affect loading. Each measurement runs in its own process (this
script re-invoked with ``--worker``), iterates for ``--seconds`` (epochs restart as needed, their
start-up included) and reports samples/s, MB/s of the (B, 2, L) uint8 batches and the time to the
first batch.

* **hapflow** -- ``make_loader(shards, "train", "train", 8, epoch_batches=25_000)``: the train
  split (85% of the samples) of a study in shard format 3 (each gene's reference span once and
  its haplotypes as edits; windows built by the loader straight into the batch), default
  ``[loader]`` settings (1,024-sample block shuffle, reverse complement p = 0.5, shift +-3 from
  the stored flanks, windows built on one thread per process). One epoch spans the
  measurement (the data are reread in new orders), as the paper's ~130k-sample epochs would.
  **hapflow-threads**: 0 workers, ``threads`` = the cores (main process only). "first batch s"
  is the time from ``make_loader`` to the first batch of a plain one-pass epoch, numba's
  one-time start in a fresh process excluded (reported apart: its first call of any compiled
  function imports its NumPy support, ~1.5 s here). "worker RSS MB" is the peak resident
  memory of each DataLoader worker
  (VmHWM, shared pages inherited from the parent included); ``--memory`` measures one loading
  process alone (see :func:`memory`). The shards (format 3) are written by ``prep.sharding.run_shard``.
* **npy** -- the same windows as uncompressed ``(2, L)`` uint8 ``.npy`` members in WebDataset
  shards of 256 samples, read by a plain ``wds.WebDataset(urls, resampled=True).shuffle(1024)
  .decode().to_tuple(...).batched(8)`` pipeline through ``wds.WebLoader`` (first
  ``--npy-samples`` samples; no augmentation).
* **naive** -- a map-style torch Dataset that builds each item on demand: ``pysam.FastaFile
  .fetch`` of the window and a cyvcf2 region query applying the sample's SNPs and indels,
  shuffled ``DataLoader(batch_size=8, persistent_workers=True)``.
* **genvarloader** -- ``gvl.write`` of the same windows once (cached), then
  ``Dataset.open(..).with_seqs("haplotypes").with_len(L).to_dataloader(batch_size=8,
  shuffle=True, persistent_workers=True)``: ``S1`` ASCII arrays, on all 300 samples; with 0
  workers it builds batches with numba threads on every core. Two more ways, main process
  only: **genvarloader-buffered** (``to_dataloader(..., mode="buffered")``, its prefetching
  producer) and **genvarloader-indexing** (``Dataset[regions, samples]`` with 8 random pairs
  per batch, no torch). GenVarLoader's best of the three is what hapflow is compared with. GenVarLoader needs polars<2 and
  runs under ``--gvl-python`` (see ``benchmarks/prep_haplotypes.py``); without it, it is
  skipped unless importable.

``--planning`` times instead the epoch plans (``ShardLoader`` construction + ``items(epoch)``,
rank 0 of 2) of every mode on a synthetic split of 8,000 genes x 300 individuals (2.4 M
samples, shards of 8,192 samples): what every rank pays at the start of every epoch.

Fairness (see ``benchmarks/_common.py``): every tool's process runs under the same
``GLIBC_TUNABLES`` (glibc keeps freed memory between batches; ``--default-malloc`` for glibc's
defaults) with each library's own thread defaults (GenVarLoader's numba kernels use every core
at 0 workers; hapflow builds windows on one thread per worker, on every core at 0 workers). A measurement takes the first batch,
one warm-up round, then the fastest of 5 rounds of ``--seconds / 5``; "others %" is the share of
all cores that other processes used in that round, "samples/CPU-s" divides by the CPU time of
the measuring process and its worker processes. The summary printed first compares each tool at
its fastest worker count ("best against best"); "x genvarloader" in the table divides by
GenVarLoader at the same worker count, which is not how either would be run.

Inputs are built once into ``benchmarks/_cache/loader_throughput`` (keyed by the shard format's
source). Results are appended to ``benchmarks/results/loader_throughput.jsonl``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import sys
import time
from pathlib import Path

from _common import (
    CHROM,
    LENGTHS,
    MALLOC_TUNABLES,
    REAL_SPAN,
    REFERENCE,
    REPO_ROOT,
    TSS_TABLE,
    VCF,
    LoadMeter,
    append_result,
    best_by_tool,
    load_note,
    print_table,
    ratio_lines,
    run_worker,
    tool_env,
    tree_cpu_seconds,
)

WORKERS = (0, 1, 2)
TOOLS = ("hapflow", "hapflow-threads", "npy", "naive", "genvarloader", "genvarloader-indexing",
         "genvarloader-buffered")
SINGLE_PROCESS = ("hapflow-threads", "genvarloader-indexing", "genvarloader-buffered")
"""Ways of running a tool that only exist in the main process (measured at 0 workers only)."""
BATCH = 8
EPOCH_BATCHES = 25_000
CACHE = REPO_ROOT / "benchmarks" / "_cache" / "loader_throughput"
ROUNDS = 5
"""A measurement is the fastest of this many rounds, after a warm-up round."""
COLUMNS = ["tool", "L", "workers", "samples/s", "MB/s", "first batch s", "samples/CPU-s",
           "worker RSS MB", "others %", "x genvarloader"]
BEST_PAIRS = (("hapflow", "genvarloader"), ("hapflow", "npy"), ("hapflow", "naive"))
"""(ours, theirs) compared best against best: each at its fastest worker count; GenVarLoader's
three ways (DataLoader, buffered DataLoader, direct indexing) compete for its best."""


# ---------------------------------------------------------------------------------------------
# Inputs (built in the main process, cached)
# ---------------------------------------------------------------------------------------------


def _cache_key() -> str:
    h = hashlib.sha256()
    for name in ("prep/gene_record.py", "prep/edits.py", "prep/sharding.py", "prep/builder.py",
                 "prep/shard_build.py"):
        h.update((REPO_ROOT / name).read_bytes())
    return h.hexdigest()[:12]


def regions(length: int, max_genes: int | None) -> list[dict]:
    """Genes whose stored window (L + 2 x 8 flank) lies in the real sequence: name, tss (0-based)."""
    sys.path.insert(0, str(REPO_ROOT))
    import polars as pl

    from prep.regions import read_tss_table

    tss = read_tss_table(TSS_TABLE)
    margin = length // 2 + 64
    tss = tss.filter((pl.col("tss") - margin >= REAL_SPAN[0])
                     & (pl.col("tss") + margin <= REAL_SPAN[1]))
    rows = [{"gene": r["name"], "tss": r["tss"], "strand": r["strand"]}
            for r in tss.iter_rows(named=True)]
    return rows[:max_genes]


def build_shards(length: int, genes: list[dict], workdir: Path) -> Path:
    """hapflow shards (format 3) of ``genes`` (synthetic standard-normal expression), once."""
    import numpy as np
    import polars as pl

    from hapflow.config import StudyConfig
    from hapflow.sections import HaplotypesConfig, ShardConfig
    from prep.sharding import run_shard
    from prep.variants import VariantReader

    shards = workdir / "shards"
    if (shards / "meta.json").exists() and json.loads(
            (shards / "meta.json").read_text()).get("format") == 3:
        return shards
    samples = VariantReader(VCF).samples
    rng = np.random.default_rng(0)
    workdir.mkdir(parents=True, exist_ok=True)
    pl.DataFrame({"gene": [g["gene"] for g in genes]}).with_columns(
        [pl.Series(s, rng.normal(size=len(genes))) for s in samples]
    ).write_parquet(workdir / "expression.parquet")
    pl.DataFrame({"gene_id": [g["gene"] for g in genes], "chrom": [CHROM] * len(genes),
                  "tss_0based": [g["tss"] for g in genes],
                  "strand": [g["strand"] for g in genes]}).write_csv(workdir / "tss.tsv",
                                                                     separator="\t")
    h = HaplotypesConfig(reference=str(REFERENCE), vcf=str(VCF), tss=str(workdir / "tss.tsv"),
                         length=length)
    s = ShardConfig(expression=str(workdir / "expression.parquet"), test_fraction=0.1,
                    val_fraction=0.05)
    run_shard(StudyConfig(haplotypes=h, shard=s), workdir)
    return shards


def build_npy_shards(genes: list[dict], length: int, out: Path, n_samples: int,
                     per_shard: int = 256) -> list[str]:
    """The windows of the first ``n_samples`` (gene, sample) pairs, (2, L) uint8, as .npy
    WebDataset shards (built by :class:`prep.builder.HaplotypeBuilder`, gene by gene)."""
    import numpy as np
    import webdataset as wds

    from prep.builder import HaplotypeBuilder

    done = out / f"done_{n_samples}"
    if not done.exists():
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        builder = HaplotypeBuilder(REFERENCE, VCF)
        n, writer = 0, None
        for g in genes:
            seqs = builder.fixed(CHROM, np.array([g["tss"]]), length).seqs[0]
            for sample, seq in zip(builder.samples, seqs, strict=True):
                if n == n_samples:
                    break
                if n % per_shard == 0:
                    if writer is not None:
                        writer.close()
                    writer = wds.TarWriter(str(out / f"npy-{n // per_shard:06d}.tar"))
                buf = io.BytesIO()
                np.save(buf, np.ascontiguousarray(seq))
                # targets live in the manifest since shard format v2: a small JSON stands in
                writer.write({"__key__": f"{g['gene'].replace('.', '_')}__{sample}",
                              "seq.npy": buf.getvalue(), "json": json.dumps(
                                  {"gene": g["gene"]}).encode()})
                n += 1
        if writer is not None:
            writer.close()
        done.touch()
    return sorted(str(p) for p in out.glob("npy-*.tar"))


# ---------------------------------------------------------------------------------------------
# Workers: each prints {"samples/s", "MB/s", "first batch s", ...}
# ---------------------------------------------------------------------------------------------


def measure(start, seconds: float, length: int, rounds: int = ROUNDS, after=None) -> dict:
    """Iterate ``start()`` (restarted when exhausted): first batch, a warm-up round, then rounds.

    The time to the first batch (workers started, epoch planned) is reported apart. Then one
    untimed round of ``seconds / rounds`` warms caches, the allocator and the workers' queues,
    and ``rounds`` timed rounds follow; the fastest is reported, with its CPU time (this
    process and its worker processes) and "others_cpu", the share of all cores other processes
    used meanwhile. ``round_rates`` lists every round's samples/s. ``after()``, called while
    the last iterator still runs, may add columns (e.g. its workers' memory).
    """
    t0 = time.perf_counter()
    it = start()
    next(it)
    first = time.perf_counter() - t0
    budget = seconds / rounds
    results = []
    for r in range(rounds + 1):
        n, meter = 0, LoadMeter(own_cpu=tree_cpu_seconds)
        while time.perf_counter() - meter.t0 < budget:
            try:
                next(it)
            except StopIteration:
                it = start()
                continue
            n += 1
        if r > 0:  # round 0 is the warm-up
            results.append({"batches": n, **meter.stop()})
    extra = after() if after is not None else {}
    best = max(results, key=lambda x: x["batches"] / x["seconds"])
    dt = best["seconds"]
    return {"samples/s": round(best["batches"] * BATCH / dt, 1),
            "MB/s": round(best["batches"] * BATCH * 2 * length / dt / 1e6, 1),
            "first batch s": round(first, 2),
            "samples/CPU-s": round(best["batches"] * BATCH / best["cpu_seconds"], 1)
            if best["cpu_seconds"] > 0 else None,
            "others_cpu": best["others_cpu"], "batches": best["batches"], "seconds": dt,
            "round_rates": [round(x["batches"] * BATCH / x["seconds"], 1) for x in results],
            **extra}


def _status_kb(pid: int | str, field: str) -> int | None:
    """A ``/proc/PID/status`` field in kB (VmRSS, VmHWM, RssAnon, ...), None if unreadable."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _workers_peak_mb() -> dict:
    """The peak RSS (VmHWM) of this process's live child processes (DataLoader workers), MB."""
    children = []
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/children") as f:
                children += f.read().split()
        except OSError:
            continue
    peaks = [kb for kb in (_status_kb(c, "VmHWM") for c in children) if kb is not None]
    return {"worker RSS MB": round(max(peaks) / 1024) if peaks else None}


def worker_hapflow(plan: dict, workers: int, threads: int = 1) -> dict:
    sys.path.insert(0, str(REPO_ROOT))
    import numpy as np

    from loader import make_loader
    from loader.order import seeded_rng, shuffle_segments

    # numba's one-time start in a fresh process (~1.5 s here: its first compiled call imports
    # its NumPy/BLAS support, scipy included), paid once per process by any numba library;
    # GenVarLoader's is outside its first batch too (in Dataset.open)
    t0 = time.perf_counter()
    shuffle_segments(np.arange(2), np.array([0, 2]), seeded_rng(0, "warm"))
    numba_s = time.perf_counter() - t0
    # first batch: from make_loader (manifest read, epoch planned, workers started, kernels
    # loaded) to the first batch of a plain one-pass epoch
    t0 = time.perf_counter()
    first = next(iter(make_loader(plan["shards"], "train", "train", BATCH,
                                  num_workers=workers, threads=threads)))
    first_s = time.perf_counter() - t0
    del first
    # throughput: epochs restart as the measurement needs, start-up included
    loader = make_loader(plan["shards"], "train", "train", BATCH, num_workers=workers,
                         threads=threads, epoch_batches=EPOCH_BATCHES)
    out = measure(lambda: iter(loader), plan["seconds"], plan["L"],
                  after=_workers_peak_mb if workers else None)
    return {**out, "first batch s": round(first_s, 2), "numba start s": round(numba_s, 2)}


def worker_hapflow_threads(plan: dict, workers: int) -> dict:
    """0 workers, windows built on every core of the main process (``[loader] threads``)."""
    return worker_hapflow(plan, 0, threads=len(os.sched_getaffinity(0)))


def memory(plan: dict) -> dict:
    """One loading process alone (what a DataLoader worker runs): a train epoch of ``plan``'s
    shards through :func:`loader.stages.worker_batches`, windows written into one reused
    (B, 2, L) buffer as into a worker's shared-memory slot. Reports RSS before loading (after
    imports) and at peak, the genes held at once against the plan's bound, and the bytes of
    the gene pool's arrays."""
    sys.path.insert(0, str(REPO_ROOT))
    import numpy as np

    from loader import make_loader
    from loader.dataloader import keep_freed_memory
    from loader.pool import GenePool
    from loader.stages import GeneSchedule, worker_batches

    keep_freed_memory()
    loader = make_loader(plan["shards"], "train", "train", BATCH, num_workers=0)
    items = loader.items(0)
    buffer = np.empty((1, BATCH, 2, plan["L"]), np.uint8)
    buffer.fill(4)
    before = _status_kb("self", "VmRSS")
    pool = GenePool(len(loader.index.genes))
    batches = worker_batches(loader.index, items, batch_size=BATCH,
                             chunk_size=loader.plan.chunk_size, window=loader.window,
                             augment=True, rc_prob=0.5, max_shift=3, seed=0, epoch=0, rank=0,
                             worker=0, buffers=lambda: buffer, pool=pool)
    n = sum(1 for _ in batches)
    peak = _status_kb("self", "VmHWM")
    gene = np.append(loader.index.gene, len(loader.index.genes)).astype(np.int64)
    bound = GeneSchedule(gene, items.reshape(-1, BATCH), loader.index,
                         hold=loader.plan.chunk_size // BATCH).bound()
    return {"L": plan["L"], "batches": n, "rss_before_mb": round(before / 1024, 1),
            "rss_peak_mb": round(peak / 1024, 1), "growth_mb": round((peak - before) / 1024, 1),
            "genes_held_peak": pool.peak, "genes_bound": bound,
            "pool_mb": round(sum(a.nbytes for a in pool.pool) / 2**20, 1),
            "batch_mb": round(buffer.nbytes / 2**20, 1)}


def worker_npy(plan: dict, workers: int) -> dict:
    import webdataset as wds

    urls = plan["npy"]
    ds = (wds.WebDataset(urls, resampled=True, nodesplitter=wds.single_node_only,
                         empty_check=False, seed=0)  # an endless stream: no epoch restarts
          .shuffle(1024).decode().to_tuple("seq.npy", "json").batched(BATCH, partial=False))
    loader = wds.WebLoader(ds, batch_size=None, num_workers=workers)
    return measure(lambda: iter(loader), plan["seconds"], plan["L"])


class NaiveDataset:
    """Per (gene, sample) item: pysam reference fetch + cyvcf2 query, SNPs and indels applied."""

    def __init__(self, genes: list[dict], length: int):
        import cyvcf2

        self.genes, self.length = genes, length
        self.fasta = self.vcf = None
        self.n_samples = len(cyvcf2.VCF(str(VCF)).samples)

    def __len__(self) -> int:
        return len(self.genes) * self.n_samples

    def __getitem__(self, i: int):
        import cyvcf2
        import numpy as np
        import pysam
        import torch

        from prep.encoding import encode

        if self.fasta is None:  # opened in each worker process
            self.fasta, self.vcf = pysam.FastaFile(str(REFERENCE)), cyvcf2.VCF(str(VCF))
        gene, sample = self.genes[i // self.n_samples], i % self.n_samples
        start = gene["tss"] - self.length // 2
        end = start + self.length
        pad = 2_000  # extra reference for deletions
        ref = self.fasta.fetch(CHROM, start, end + pad).upper()
        haps = []
        for h in (0, 1):
            parts, pos = [], start
            for v in self.vcf(f"{CHROM}:{start + 1}-{end}"):
                allele = v.genotypes[sample][h]
                if v.start < pos or allele is None or allele <= 0:
                    continue
                parts += [ref[pos - start:v.start - start], v.ALT[allele - 1]]
                pos = v.start + len(v.REF)
            parts.append(ref[pos - start:])
            seq = "".join(parts)[: self.length]
            haps.append(encode(seq.ljust(self.length, "N")))
        return torch.from_numpy(np.stack(haps))


def worker_naive(plan: dict, workers: int) -> dict:
    sys.path.insert(0, str(REPO_ROOT))
    import torch
    from torch.utils.data import DataLoader

    ds = NaiveDataset(plan["genes"], plan["L"])
    loader = DataLoader(ds, batch_size=BATCH, shuffle=True, num_workers=workers, drop_last=True,
                        generator=torch.Generator().manual_seed(0),
                        persistent_workers=workers > 0)
    return measure(lambda: iter(loader), plan["seconds"], plan["L"])


def open_gvl(plan: dict):
    """GenVarLoader dataset of the plan's windows (``gvl.write`` once, cached), fixed length L."""
    import genoray
    import genvarloader as gvl
    import polars as pl

    length = plan["L"]
    path = Path(plan["gvl"])
    if not (path / "done").exists():
        src = path.parent / "inputs"
        src.mkdir(parents=True, exist_ok=True)
        for p in (VCF, Path(f"{VCF}.tbi"), REFERENCE, Path(f"{REFERENCE}.fai"),
                  Path(f"{REFERENCE}.gzi")):  # gvl writes caches next to its inputs
            if not (src / p.name).exists():
                shutil.copy(p, src / p.name)
        starts = [g["tss"] - length // 2 for g in plan["genes"]]
        bed = pl.DataFrame({"chrom": [CHROM] * len(starts), "chromStart": starts,
                            "chromEnd": [s + length for s in starts]})
        gvl.write(path, bed, genoray.VCF(str(src / VCF.name)), overwrite=True)
        (path / "done").touch()
    return (gvl.Dataset.open(path, reference=str(path.parent / "inputs" / REFERENCE.name))
            .with_seqs("haplotypes").with_len(length))


def worker_genvarloader(plan: dict, workers: int) -> dict:
    ds = open_gvl(plan)
    loader = ds.to_dataloader(batch_size=BATCH, shuffle=True, num_workers=workers,
                              persistent_workers=workers > 0)
    return measure(lambda: iter(loader), plan["seconds"], plan["L"])


def worker_genvarloader_buffered(plan: dict, workers: int) -> dict:
    """``to_dataloader(mode="buffered")``: GenVarLoader's prefetching producer (main process)."""
    ds = open_gvl(plan)
    loader = ds.to_dataloader(batch_size=BATCH, shuffle=True, mode="buffered")
    return measure(lambda: iter(loader), plan["seconds"], plan["L"])


def worker_genvarloader_indexing(plan: dict, workers: int) -> dict:
    """``Dataset[regions, samples]`` with 8 random (region, sample) pairs per batch, no torch."""
    import numpy as np

    ds = open_gvl(plan)
    rng = np.random.default_rng(0)

    def batches():
        while True:
            idx = rng.integers(0, ds.shape[0] * ds.shape[1], size=BATCH)
            r, s = np.unravel_index(idx, ds.shape)
            yield ds[r, s]  # (8, 2, L) S1

    return measure(batches, plan["seconds"], plan["L"])


def planning(genes: int = 8_000, per_gene: int = 300, repeats: int = 3) -> list[dict]:
    """Seconds to plan one epoch per mode (best of ``repeats``) on a synthetic split index."""
    sys.path.insert(0, str(REPO_ROOT))
    import numpy as np

    from hapflow.sections import LoaderConfig
    from loader.dataloader import ShardLoader
    from loader.sources import SplitIndex

    n = genes * per_gene
    gene = np.repeat(np.arange(genes, dtype=np.int32), per_gene)
    shard = (np.arange(n) // 8_192).astype(np.int32)
    rows = []
    for split, mode in (("train", "train"), ("train", "gene"), ("val", "eval"), ("val", "gene"),
                        ("train", "pairwise"), ("val", "pairwise")):
        index = SplitIndex(split=split, urls=[f"s{i}.tar" for i in range(shard.max() + 1)],
                           shard=shard, key=[""] * n, gene=gene,
                           genes=[str(g) for g in range(genes)],
                           P=np.random.default_rng(0).random(n) * 100, row=np.arange(n),
                           length=1024, flank=8)
        best = float("inf")
        for epoch in range(repeats):
            t0 = time.perf_counter()
            loader = ShardLoader(index, LoaderConfig(batch_size=BATCH), mode, 0, 2)
            loader.items(epoch)
            best = min(best, time.perf_counter() - t0)
        rows.append({"split": split, "mode": mode, "samples": n, "genes": genes,
                     "plan s": round(best, 3)})
        print(f"  {mode:9s} {split:5s}: {best:.3f} s", file=sys.stderr, flush=True)
    return rows


WORKER_FNS = {"hapflow": worker_hapflow, "hapflow-threads": worker_hapflow_threads,
              "npy": worker_npy, "naive": worker_naive,
              "genvarloader": worker_genvarloader,
              "genvarloader-indexing": worker_genvarloader_indexing,
              "genvarloader-buffered": worker_genvarloader_buffered}


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------


def make_plans(args: argparse.Namespace) -> dict[int, Path]:
    sys.path.insert(0, str(REPO_ROOT))
    import logging

    logging.basicConfig(level=logging.WARNING)
    root = CACHE / _cache_key()
    for stale in CACHE.glob("*"):  # inputs of an older shard format
        if stale.is_dir() and stale != root:
            shutil.rmtree(stale)
    plans = {}
    for length in args.lengths:
        genes = regions(length, args.max_genes)
        work = root / f"L{length}_g{len(genes)}"
        t0 = time.perf_counter()
        shards = build_shards(length, genes, work)
        npy = build_npy_shards(genes, length, work / "npy", args.npy_samples) \
            if "npy" in args.tools else []
        print(f"L={length}: {len(genes)} genes; inputs ready in {time.perf_counter() - t0:.1f} s",
              file=sys.stderr, flush=True)
        plan = {"L": length, "genes": genes, "shards": str(shards), "npy": npy,
                "gvl": str(work / "gvl" / "windows.gvl"), "seconds": args.seconds}
        _warm_numba(shards)
        (work / "plan.json").write_text(json.dumps(plan))
        plans[length] = work / "plan.json"
    return plans


def _warm_numba(shards: Path) -> None:
    """One batch with and without workers, so that the measured processes load hapflow's numba
    kernels from the cache instead of compiling them (compilation is not what is measured)."""
    from loader import make_loader

    for workers in (0, 1):
        next(iter(make_loader(shards, "train", "train", BATCH, num_workers=workers)))


def tool_python(tool: str, args: argparse.Namespace) -> str | None:
    if not tool.startswith("genvarloader"):
        return sys.executable
    if args.gvl_python:
        return args.gvl_python
    try:
        import genvarloader  # noqa: F401
    except ImportError:
        print("genvarloader is not importable: skipped (pass --gvl-python)", file=sys.stderr)
        return None
    return sys.executable


def run_benchmark(args: argparse.Namespace) -> None:
    t_start, load_before = time.perf_counter(), os.getloadavg()[0]
    plans = make_plans(args)
    rows = []
    env = tool_env(None, tuned_malloc=not args.default_malloc)  # the same for every tool
    for length, plan in plans.items():
        for tool in args.tools:
            python = tool_python(tool, args)
            if python is None:
                continue
            for workers in [0] if tool in SINGLE_PROCESS else args.workers:
                try:
                    result = run_worker([__file__, "--worker", tool, "--plan", str(plan),
                                         "--num-workers", str(workers)], python=python,
                                        env=env, timeout=600)
                except RuntimeError as err:
                    print(f"{tool} L={length} workers={workers} failed: {err}", file=sys.stderr)
                    continue
                rows.append({"tool": tool, "family": tool.split("-")[0], "L": length,
                             "workers": workers, **result})
                print(f"  {tool:13s} L={length:>7,} workers={workers}: "
                      f"{result['samples/s']:>9,.1f} samples/s "
                      f"(others {round(100 * result['others_cpu'])} %)",
                      file=sys.stderr, flush=True)
    for r in rows:
        r["others %"] = round(100 * r["others_cpu"])
        ref = [g for g in rows if g["tool"] == "genvarloader" and g["L"] == r["L"]
               and g["workers"] == r["workers"]]
        r["x genvarloader"] = round(r["samples/s"] / ref[0]["samples/s"], 2) if ref else None
    malloc = "glibc defaults" if args.default_malloc else f"GLIBC_TUNABLES={MALLOC_TUNABLES}"
    ratios = ratio_lines(best_by_tool(rows, "samples/s", "workers"), BEST_PAIRS, "samples/s",
                         "workers", args.lengths)
    print(f"\nbest against best (each tool at its fastest worker count, all under {malloc}):")
    for line in ratios:
        print("  " + line)
    print("\nevery setting (x genvarloader: at the same worker count):")
    print_table(rows, COLUMNS)
    note = load_note(load_before, os.getloadavg()[0])
    print(note)
    settings = {k: v for k, v in vars(args).items()
                if k not in ("worker", "plan", "num_workers", "gvl_python")}
    append_result("loader_throughput", {"args": settings, "batch_size": BATCH,
                                        "seconds": args.seconds,
                                        "rounds": ROUNDS, "malloc": malloc,
                                        "best_vs_best": ratios, "rows": rows,
                                        "load": note,
                                        "wall_seconds": round(time.perf_counter() - t_start)})


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="2 s per measurement, 8 genes, 1,024 .npy samples")
    p.add_argument("--seconds", type=float, default=6.0, help="timed seconds per measurement")
    p.add_argument("--lengths", default=",".join(map(str, LENGTHS)))
    p.add_argument("--workers", default=",".join(map(str, WORKERS)),
                   help="DataLoader worker counts")
    p.add_argument("--tools", default=",".join(TOOLS))
    p.add_argument("--max-genes", type=int, help="use the first N genes only")
    p.add_argument("--npy-samples", type=int, default=4096, help="samples in the .npy shards")
    p.add_argument("--gvl-python", help="interpreter that can import genvarloader")
    p.add_argument("--default-malloc", action="store_true",
                   help="run every tool under glibc's default malloc settings instead of "
                   "GLIBC_TUNABLES (see benchmarks/_common.py)")
    p.add_argument("--planning", action="store_true",
                   help="time the epoch plans of every mode on 8,000 genes x 300 individuals")
    p.add_argument("--memory", action="store_true",
                   help="measure one loading process's memory at each length instead")
    p.add_argument("--worker", choices=(*TOOLS, "memory"), help=argparse.SUPPRESS)
    p.add_argument("--plan", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--num-workers", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.lengths = [int(x) for x in str(args.lengths).split(",")]
    args.workers = [int(x) for x in str(args.workers).split(",")]
    args.tools = [t for t in str(args.tools).split(",") if t]
    unknown = set(args.tools) - set(TOOLS)
    if unknown:
        p.error(f"unknown tool(s) {', '.join(sorted(unknown))}; choose from {', '.join(TOOLS)}")
    if args.quick:
        args.seconds = min(args.seconds, 2.0)
        args.max_genes = args.max_genes or 8
        args.npy_samples = min(args.npy_samples, 1024)
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.planning:
        rows = planning()
        print_table(rows, ["mode", "split", "samples", "genes", "plan s"])
        append_result("loader_planning", {"batch_size": BATCH, "rows": rows})
        return
    if args.worker:
        plan = json.loads(args.plan.read_text())
        if args.worker == "memory":
            print(json.dumps(memory(plan)))
        else:
            print(json.dumps(WORKER_FNS[args.worker](plan, args.num_workers)))
        return
    if args.memory:
        rows = [run_worker([__file__, "--worker", "memory", "--plan", str(plan)],
                           env=tool_env(None, tuned_malloc=not args.default_malloc), timeout=900)
                for plan in make_plans(args).values()]
        print_table(rows, list(rows[0]))
        append_result("loader_memory", {"batch_size": BATCH, "rows": rows})
        return
    run_benchmark(args)


if __name__ == "__main__":
    main()
