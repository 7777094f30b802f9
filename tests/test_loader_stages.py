"""loader.stages, loader.records, loader.pool: reading gene records, scheduling, collating, on
literal format-3 shards (synthetic: the edge cases the real data lacks; the real demo is in
test_loader_dataloader)."""

from __future__ import annotations

import tarfile

import numpy as np
import pytest

from loader.augment import Window
from loader.order import interleave_lanes, seeded_rng
from loader.pool import GenePool
from loader.records import GeneReader
from loader.sources import SplitIndex, StaleShardError
from loader.stages import BatchTables, GeneSchedule, collate_pairs, collate_samples, worker_batches
from prep.edits import GeneEdits
from prep.gene_record import encode_gene
from prep.shard_format import ShardFormatError, safe_key, sample_key
from prep.shard_tar import ShardWriter

N = 4
REF = np.array([0, 1, 2, 3, 0, 1, 2, 3, 0, 1], dtype=np.uint8)  # W = 10: L = 6, flank 2
TSS = 5  # W // 2: the TSS's index in the span (the span is the stored window here)


def _haps(i: int) -> np.ndarray:
    """Individual i's two haplotypes: the reference with base i of haplotype 2 set to N."""
    h = np.stack([REF, REF])
    h[1, i] = N
    return h


def _edits(n: int) -> GeneEdits:
    """Edit e (e < n): base e becomes N; haplotype 2 of individual e carries it."""
    bits = np.zeros((2 * n, n), bool)
    bits[2 * np.arange(n) + 1, np.arange(n)] = True
    return GeneEdits(starts=np.arange(n, dtype=np.int64), ends=np.arange(1, n + 1, dtype=np.int64),
                     alt_offsets=np.arange(n + 1, dtype=np.int64), alt_codes=np.full(n, N, np.uint8),
                     bits=np.packbits(bits, axis=1))


def _members(gene: str, n: int, build: str = "b", **change) -> list[tuple[str, bytes]]:
    meta = {"build": build, "gene": gene, "chrom": "22", "tss": 100 + TSS, "strand": "+",
            "span_start": 100, "tss_rel": TSS, "length": 6, "flank": 2, "width": 10,
            "reverse_complemented": False, "individuals": [f"I{i}" for i in range(n)],
            "applied": [[0, 1]] * n, **change}
    return encode_gene(meta, REF, _edits(n))


def _study(tmp_path, shards=1, genes=1, n=3, build="b") -> SplitIndex:
    """``shards`` shards of ``genes`` genes (G{s}_{g}.1) x ``n`` individuals, one split."""
    urls, shard, gene, keys, names = [], [], [], [], []
    for s in range(shards):
        path = tmp_path / f"s{s}.tar"
        w = ShardWriter(path)
        for g in range(genes):
            name = f"G{s}_{g}.1"
            for ext, data in _members(name, n, build):
                w.add(f"{safe_key(name)}.{ext}", data)
            shard += [s] * n
            gene += [s * genes + g] * n
            keys += [sample_key(name, f"I{i}") for i in range(n)]
            names.append(name)
        w.close()
        urls.append(str(path))
    m = len(keys)
    targets = np.stack([np.arange(m), np.zeros(m), np.arange(m) * 10.0], 1).astype(np.float32)
    return SplitIndex(split="train", urls=urls, shard=np.array(shard, np.int32), key=keys,
                      gene=np.array(gene, np.int32), genes=names, P=np.arange(m) * 10.0,
                      row=np.arange(m) + 100, length=6, flank=2,
                      record_row=np.tile(np.arange(n), shards * genes).astype(np.int32),
                      individual=np.array([k.split("__")[1] for k in keys], object),
                      build="b", targets=targets)


def _held(index: SplitIndex) -> tuple[BatchTables, GenePool]:
    """Tables and a pool holding every gene of ``index``."""
    pool, reader = GenePool(len(index.genes)), GeneReader(index)
    for g in range(len(index.genes)):
        for got, record in reader.fetch(g):
            pool.add(got, record)
    reader.close()
    return BatchTables(index), pool


def _run(index, items, **kw):
    args = {"batch_size": 2, "chunk_size": 2, "window": Window(6), "augment": False,
            "rc_prob": 0.5, "max_shift": 3, "seed": 0, "epoch": 0, "rank": 0, "worker": 0, **kw}
    return list(worker_batches(index, np.asarray(items).reshape(-1, 1), **args))


# -- collation ----------------------------------------------------------------------------------


def test_collate_samples_pads_with_n_nan_and_invalid(tmp_path):
    tables, pool = _held(_study(tmp_path))
    b = collate_samples(tables, pool, np.array([[0], [-1]]), Window(6), np.array([2, 1]),
                        np.array([True, True]))
    assert b["seq"].shape == (2, 2, 6) and b["seq"].dtype == np.uint8
    assert b["seq"][0, 1].tolist() == [2, 3, 0, 1, 2, N]  # shift 2, then reverse complement
    assert (b["seq"][1] == N).all()
    assert b["valid"].tolist() == [True, False]
    assert b["Y"][0] == 0.0 and np.isnan(b["Y"][1]) and b["P"].dtype == np.float32
    assert b["index"].tolist() == [100, -1]
    assert b["shift"].tolist() == [2, 0] and b["rc"].tolist() == [True, False]
    assert b["tss_index"].tolist() == [6 - 1 - (3 + 2), -1]
    assert b["individual"] == ["I0", ""] and b["gene"] == ["G0_0.1", ""]


def test_collate_pairs_shares_augmentation(tmp_path):
    tables, pool = _held(_study(tmp_path, n=5))
    b = collate_pairs(tables, pool, np.array([[0, 4], [2, -1]]), Window(6), np.array([-1, 2]),
                      np.array([False, True]))
    assert b["seq_a"].shape == (2, 2, 6)
    assert b["seq_a"][0, 0].tolist() == b["seq_b"][0, 0].tolist() == [3, 0, 1, 2, 3, 0]
    assert b["seq_b"][0, 1].tolist() == [3, N, 1, 2, 3, 0]  # individual 4's N at base 4
    assert b["valid"].tolist() == [True, False]  # a pair with a padding member is padding
    assert (b["seq_a"][1] == N).all() and (b["seq_b"][1] == N).all()
    assert b["individual_a"] == ["I0", ""] and b["individual_b"] == ["I4", ""]
    assert b["index_a"].tolist() == [100, -1] and b["index_b"].tolist() == [104, -1]
    assert b["tss_index"].tolist() == [2, -1] and b["shift"].tolist() == [-1, 0]
    assert b["Y_b"][0] == 4.0 and np.isnan(b["Y_a"][1])


def test_collate_writes_into_the_given_buffer(tmp_path):
    tables, pool = _held(_study(tmp_path))
    out = np.zeros((1, 2, 2, 6), np.uint8)
    b = collate_samples(tables, pool, np.array([[2], [1]]), Window(6), np.zeros(2, np.int64),
                        np.zeros(2, bool), out)
    assert np.shares_memory(b["seq"], out)
    assert out[0, 0].tolist() == _haps(2)[:, 2:8].tolist()


# -- worker_batches -----------------------------------------------------------------------------


def test_worker_batches_eval_order_padding_and_skip(tmp_path):
    index = _study(tmp_path)
    batches = _run(index, [0, 1, 2, -1])
    assert [b["index"].tolist() for b in batches] == [[100, 101], [102, -1]]
    assert batches[1]["seq"][0].tolist() == _haps(2)[:, 2:8].tolist()
    assert [b["batch"] for b in batches] == [0, 1]
    # targets come from the index (the manifest), not the shard: Y = position here
    assert batches[0]["Y"].tolist() == [0.0, 1.0] and batches[1]["P"][0] == 20.0
    assert np.isnan(batches[1]["Y"][1])
    assert [b["index"].tolist() for b in _run(index, [0, 1, 2, -1], skip=1)] == [[102, -1]]


def test_worker_batches_windows_at_any_length_up_to_l(tmp_path):
    index = _study(tmp_path)
    for n in (2, 4, 6):
        got = _run(index, [2, 1], window=Window(n))[0]["seq"]
        lo = TSS - n // 2
        assert got[0].tolist() == _haps(2)[:, lo:lo + n].tolist(), n


def test_worker_batches_pairs_one_kernel_call_for_both_members(tmp_path):
    index = _study(tmp_path)
    args = {"batch_size": 1, "chunk_size": 1, "window": Window(6), "augment": False,
            "rc_prob": 0.5, "max_shift": 3, "seed": 0, "epoch": 0, "rank": 0, "worker": 0}
    (b,) = list(worker_batches(index, np.array([[2, 0]]), **args))
    assert b["seq_a"][0].tolist() == _haps(2)[:, 2:8].tolist()
    assert b["seq_b"][0].tolist() == _haps(0)[:, 2:8].tolist()


# -- reading: errors, skipping, verification ----------------------------------------------------


def _cut_after_first_gene(src, dst):
    """Copy ``src`` cut inside the second gene's edits member."""
    with tarfile.open(src) as tar:
        member = [m for m in tar.getmembers() if m.name.endswith(".var.zst")][1]
    dst.write_bytes(src.read_bytes()[: member.offset_data + member.size // 2])


def test_a_gene_is_read_without_reading_the_rest_of_its_shard(tmp_path):
    """A stream stops as soon as the wanted record is complete: the first gene of a shard cut
    inside its second gene reads fine (and only the second gene fails)."""
    index = _study(tmp_path, genes=2)
    _cut_after_first_gene(tmp_path / "s0.tar", tmp_path / "cut.tar")
    index.urls = [str(tmp_path / "cut.tar")]
    reader = GeneReader(index)
    assert [g for g, _ in reader.fetch(0)] == [0]
    with pytest.raises(ShardFormatError, match="cut.tar"):
        reader.fetch(1)


def test_truncated_shard_raises_naming_it_or_is_skipped_and_counted(tmp_path):
    index = _study(tmp_path, genes=2)
    _cut_after_first_gene(tmp_path / "s0.tar", tmp_path / "cut.tar")
    index.urls = [str(tmp_path / "cut.tar")]
    items = [0, 1, 2, 3, 4, 5]
    with pytest.raises(ShardFormatError, match="cut.tar"):
        _run(index, items)
    batches = _run(index, items, on_error="skip")
    valid = np.concatenate([b["valid"] for b in batches])
    assert valid.tolist() == [True] * 3 + [False] * 3  # gene 2's samples become padding
    assert all((b["seq"][~b["valid"]] == N).all() for b in batches)
    errors = [e for b in batches for e in b["errors"]]
    assert len(errors) == 1 and errors[0][0].endswith("cut.tar")
    assert "skipped" in errors[0][1] and "3 sample(s) of gene G0_1.1" in errors[0][1]


def _corrupt(tmp_path, index, gene: int, ext: str):
    """Flip one byte in the middle of member ``ext`` of gene ``gene`` of shard 0."""
    path = tmp_path / "s0.tar"
    name = f"{safe_key(index.genes[gene])}.{ext}"
    with tarfile.open(path) as tar:
        member = tar.getmember(name)
    data = bytearray(path.read_bytes())
    data[member.offset_data + member.size // 2] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("ext", ["json", "ref.2bit", "var.zst"])
def test_a_corrupt_member_becomes_padding_counted_in_skipped(tmp_path, ext):
    """Issue 15 item 9: a gene record whose JSON fails its checksum (or any corrupt member)
    raises naming shard and member, or with on_error = "skip" costs that gene's samples only:
    padding (valid False, all N), reported as skipped."""
    index = _study(tmp_path, genes=3)
    _corrupt(tmp_path, index, 1, ext)
    items = list(range(9)) + [-1]
    with pytest.raises(ShardFormatError, match=rf"s0.tar: member G0_1_1\.{ext}.*corrupt"):
        _run(index, items)
    batches = _run(index, items, on_error="skip")
    valid = np.concatenate([b["valid"] for b in batches])
    assert valid.tolist() == [True] * 3 + [False] * 3 + [True] * 3 + [False]
    errors = [e for b in batches for e in b["errors"]]
    assert len(errors) == 1 and f"G0_1_1.{ext}" in errors[0][1] and "skipped" in errors[0][1]


def test_a_stale_build_raises_even_when_skipping(tmp_path):
    index = _study(tmp_path)
    index.build = "other"
    with pytest.raises(StaleShardError, match="mixes builds"):
        _run(index, [0, 1], on_error="skip")


def test_a_gene_missing_from_its_shard(tmp_path):
    index = _study(tmp_path)
    index.genes[0] = "NOT_THERE.1"
    with pytest.raises(ShardFormatError, match=r"lacks gene NOT_THERE.1 \(3 sample"):
        _run(index, [0, 1])


def test_individuals_must_be_those_the_manifest_lists_at_their_rows(tmp_path):
    index = _study(tmp_path)
    index.record_row[:] = [1, 0, 2]
    with pytest.raises(ShardFormatError, match="individuals are not those the manifest lists"):
        _run(index, [0, 1])


# -- the pool and the schedule ------------------------------------------------------------------


def test_pool_grows_by_doubling_and_keeps_its_genes(tmp_path):
    index = _study(tmp_path, genes=5)
    pool, reader = GenePool(5), GeneReader(index)
    for g in range(5):
        for got, record in reader.fetch(g):
            pool.add(got, record)
    assert len(pool) == pool.peak == 5 and pool.pool.refs.shape == (8, 16)
    pool.release(1)
    pool.release(3)
    assert len(pool) == 3 and 1 not in pool and pool.peak == 5
    tables = BatchTables(index)
    b = collate_samples(tables, pool, np.array([[14], [4], [0]]), Window(6),
                        np.zeros(3, np.int64), np.zeros(3, bool))
    assert b["valid"].tolist() == [True, False, True]  # gene 1 (positions 3-5) released
    assert b["seq"][0].tolist() == _haps(2)[:, 2:8].tolist()


def test_schedule_reads_a_gene_once_per_run_and_frees_it_after():
    index = SplitIndex(split="train", urls=["s0"], shard=np.zeros(6, np.int32), key=list("abcdef"),
                       gene=np.array([0, 0, 1, 1, 2, 2], np.int32), genes=["A", "B", "C"],
                       P=np.zeros(6), row=np.arange(6), length=6, flank=2)
    gene = np.append(index.gene, 3).astype(np.int64)
    batches = np.array([[0, 2], [1, 3], [4, -1], [5, -1], [0, -1]])  # gene A again at batch 4
    near = GeneSchedule(gene, batches, index, hold=1)
    assert near.run_gene.tolist() == [0, 0, 1, 2] and near.run_first.tolist() == [0, 4, 0, 2]
    assert [r.tolist() for r in near._reads] == [[0, 1], [], [2], [], [0]]
    assert [r.tolist() for r in near._frees] == [[], [0, 1], [], [2], [0]]
    assert near.bound() == 3  # batch 1 holds A, B and, read ahead, C
    kept = GeneSchedule(gene, batches, index, hold=3)
    assert kept.run_gene.tolist() == [0, 1, 2]  # A held from batch 0 to 4
    assert GeneSchedule(gene, batches, index, hold=1, first=3)._reads[4].tolist() == [0]


def test_the_pool_holds_at_most_the_bound_of_its_schedule(tmp_path):
    """Memory bounded by the plan, not by the shards: 4 lanes through 4 shards of 6 genes hold
    about two genes per lane, never a shard's worth per lane."""
    index = _study(tmp_path, shards=4, genes=6, n=10)  # 240 samples
    perm = interleave_lanes(len(index), 4, 5, seeded_rng(0, "t"))
    pool = GenePool(len(index.genes))
    batches = _run(index, perm, batch_size=4, chunk_size=40, pool=pool)
    assert sorted(int(i) for b in batches for i in b["index"]) == list(range(100, 340))
    schedule = GeneSchedule(np.append(index.gene, 24).astype(np.int64), perm.reshape(-1, 4),
                            index, hold=10)
    assert pool.peak <= schedule.bound() <= 2 * 4
    assert pool.pool.refs.shape[0] <= 8  # slots: at most the peak, rounded up to a power of 2
    assert len(pool) == 0  # every gene freed after its last batch
