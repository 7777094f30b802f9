"""loader.stages: gathering, shuffling, collating and reading, on literal data and a tiny shard."""

from __future__ import annotations

import json
import tarfile

import numpy as np
import pytest

from loader.augment import Window
from loader.order import interleave_lanes, seeded_rng
from loader.sources import SplitIndex
from loader.stages import (
    Group,
    collate_pairs,
    collate_samples,
    decode_groups,
    gather_chunks,
    read_interleaved,
    read_rows,
    split_rounds,
    worker_batches,
)
from prep.shard_format import (
    ShardFormatError,
    encode_group,
    encode_reference,
    group_key,
    sample_key,
    unpack_groups,
)
from prep.shard_tar import ShardWriter, read_tar_members

N = 4
REF = np.array([0, 1, 2, 3, 0, 1, 2, 3, 0, 1], dtype=np.uint8)  # W = 10: L = 6, flank 2


def _haps(i: int) -> np.ndarray:
    """Individual i's two haplotypes: the reference with base i of haplotype 2 set to N."""
    h = np.stack([REF, REF])
    h[1, i] = N
    return h


def _tiny_shard(path, n=3):
    """One gene (G.1) of n individuals in two groups (sizes 2 and n - 2)."""
    w = ShardWriter(path)
    w.add_reference("G.1", encode_reference(REF))
    inds = [f"I{i}" for i in range(n)]
    keys = []
    for g, lo in enumerate(range(0, n, 2)):
        members = inds[lo:lo + 2]
        haps = np.stack([_haps(lo + j) for j in range(len(members))])
        meta = {"gene": "G.1", "chrom": "22", "tss": 100, "strand": "+", "split": "train",
                "length": 6, "flank": 2, "window": 10, "tss_index": 5,
                "reverse_complemented": False, "build": "b",
                "individuals": members, "populations": ["EUR"] * len(members),
                "applied": [[0, 0]] * len(members)}
        key = group_key("G.1", "train", g)
        w.add_group(key, encode_group(haps, REF), meta)
        keys += [key] * len(members)
    w.close()
    targets = np.stack([np.arange(n), np.zeros(n), np.arange(n) * 10.0], 1).astype(np.float32)
    return SplitIndex(split="train", urls=[str(path)], shard=np.zeros(n, np.int32), group=keys,
                      key=[sample_key("G.1", i) for i in inds], gene=np.zeros(n, np.int32),
                      genes=["G.1"], P=np.arange(n) * 10.0, row=np.arange(n) + 100, length=6,
                      flank=2, targets=targets)


def test_gather_chunks_waits_for_every_sample_and_keeps_order():
    chunks = [np.array([[0], [1]]), np.array([[2], [-1]])]
    events = [(2, "c"), (0, "a"), (1, "b")]
    out = list(gather_chunks(events, chunks))
    assert out == [[("a",), ("b",)], [("c",), (None,)]]


def test_gather_chunks_shares_samples_between_pair_chunks():
    chunks = [np.array([[0, 1]]), np.array([[1, 2]]), np.array([[-1, -1]])]
    out = list(gather_chunks([(0, "a"), (1, "b"), (2, "c")], chunks))
    assert out == [[("a", "b")], [("b", "c")], [(None, None)]]


def test_gather_chunks_ignores_unwanted_and_repeated_events():
    out = list(gather_chunks([(5, "x"), (0, "a"), (0, "again")], [np.array([[0]])]))
    assert out == [[("a",)]]


def test_split_rounds_rereads_samples_needed_again_later():
    chunks = [np.array([[0], [1]]), np.array([[2], [3]]), np.array([[1], [4]]),
              np.array([[5], [-1]])]
    assert split_rounds(chunks) == [[0, 1], [2, 3]]
    pairs = [np.array([[0, 1]]), np.array([[1, 2]]), np.array([[2, 3]]), np.array([[0, 3]])]
    assert split_rounds(pairs) == [[0, 1, 2], [3]]  # neighbours may share; 0 comes back later
    assert split_rounds([]) == []


def _sample(ind: int) -> tuple:
    """A handle (group, row) on a one-row group of individual ``ind``."""
    meta = {"tss_index": 5, "gene": "G.1", "individuals": [f"I{ind}"], "populations": ["EUR"]}
    return Group(_haps(ind)[None], meta, "mem"), 0


def test_collate_samples_pads_with_n_nan_and_invalid():
    targets = {"Y": np.array([1.5, 2.5], np.float32), "Z": np.array([0.5, 0.5], np.float32),
               "P": np.array([20.0, 30.0], np.float32)}  # padding rows are cleared
    b = collate_samples([(_sample(0),), (None,)], np.array([7, -1]), Window(6),
                        np.array([2, 1]), np.array([True, True]), targets=targets)
    assert b["seq"].shape == (2, 2, 6) and b["seq"].dtype == np.uint8
    assert b["seq"][0, 1].tolist() == [2, 3, 0, 1, 2, N]  # shift 2, then reverse complement
    assert (b["seq"][1] == N).all()
    assert b["valid"].tolist() == [True, False]
    assert b["Y"][0] == 1.5 and np.isnan(b["Y"][1])
    assert b["index"].tolist() == [7, -1]
    assert b["shift"].tolist() == [2, 0] and b["rc"].tolist() == [True, False]
    assert b["tss_index"].tolist() == [6 - 1 - (3 + 2), -1]
    assert b["individual"] == ["I0", ""]


def test_collate_pairs_shares_augmentation():
    b = collate_pairs([(_sample(0), _sample(1))], np.array([[3, 4]]), Window(6),
                      np.array([-1]), np.array([False]))
    assert b["seq_a"].shape == (1, 2, 6)
    assert b["seq_a"][0, 0].tolist() == b["seq_b"][0, 0].tolist() == [3, 0, 1, 2, 3, 0]
    assert b["individual_a"] == ["I0"] and b["individual_b"] == ["I1"]
    assert b["index_a"].tolist() == [3] and b["index_b"].tolist() == [4]
    assert b["tss_index"].tolist() == [2]


def test_read_rows_yields_only_wanted_samples(tmp_path):
    index = _tiny_shard(tmp_path / "s.tar")
    got = list(read_rows(index, [(0, {index.key[2]: 2, index.key[0]: 0})]))
    assert [p for p, _ in got] == [0, 2]
    group, row = got[1][1]
    assert group.haps[row].tolist() == _haps(2).tolist()
    assert group.meta["individuals"][row] == "I2"


def _truncate(src, dst):
    """Copy ``src`` cut in the middle of its last haplotype member."""
    with tarfile.open(src) as tar:
        last = [m for m in tar.getmembers() if m.name.endswith(".hap.zst")][-1]
    dst.write_bytes(src.read_bytes()[: last.offset_data + last.size // 2])


def test_read_rows_raises_naming_a_truncated_shard(tmp_path):
    index = _tiny_shard(tmp_path / "s.tar")
    _truncate(tmp_path / "s.tar", tmp_path / "cut.tar")
    index.urls = [str(tmp_path / "cut.tar")]
    with pytest.raises(ShardFormatError, match="cut.tar"):
        list(read_rows(index, [(0, {k: i for i, k in enumerate(index.key)})]))


def test_read_rows_skips_and_counts_a_truncated_shard(tmp_path):
    index = _tiny_shard(tmp_path / "s.tar")
    _truncate(tmp_path / "s.tar", tmp_path / "cut.tar")
    index.urls = [str(tmp_path / "cut.tar")]
    errors = []
    got = list(read_rows(index, [(0, {k: i for i, k in enumerate(index.key)})], "skip", errors))
    assert sorted(p for p, _ in got) == [0, 1, 2]
    assert [p for p, s in got if s is None]  # some samples lost
    assert len(errors) == 1 and errors[0][0].endswith("cut.tar") and "skipped" in errors[0][1]


def test_read_rows_reports_samples_missing_from_a_shard(tmp_path):
    index = _tiny_shard(tmp_path / "s.tar", n=2)
    index.key.append(sample_key("G.1", "NOT_THERE"))
    index.group.append(index.group[0])
    with pytest.raises(ShardFormatError, match=r"lacks 1 sample\(s\) listed in the manifest"):
        list(read_rows(index, [(0, {k: i for i, k in enumerate(index.key)})]))


def test_worker_batches_eval_order_and_padding(tmp_path):
    index = _tiny_shard(tmp_path / "s.tar")
    items = np.array([[0], [1], [2], [-1]])
    batches = list(worker_batches(index, items, batch_size=2, chunk_size=2, window=Window(6),
                                  augment=False, rc_prob=0.5, max_shift=3, seed=0,
                                  epoch=0, rank=0, worker=0))
    assert [b["index"].tolist() for b in batches] == [[100, 101], [102, -1]]
    assert batches[1]["seq"][0].tolist() == _haps(2)[:, 2:8].tolist()
    assert [b["batch"] for b in batches] == [0, 1]
    # targets come from the index (the manifest), not the shard: Y = position here
    assert batches[0]["Y"].tolist() == [0.0, 1.0] and batches[1]["P"][0] == 20.0
    assert np.isnan(batches[1]["Y"][1])
    skipped = list(worker_batches(index, items, batch_size=2, chunk_size=2, window=Window(6),
                                  augment=False, rc_prob=0.5, max_shift=3, seed=0,
                                  epoch=0, rank=0, worker=0, skip=1))
    assert [b["index"].tolist() for b in skipped] == [[102, -1]]


def test_decode_groups_equals_prep_unpack_groups(tmp_path):
    _tiny_shard(tmp_path / "s.tar")
    mine = [(key, g.haps[r], g.meta["tss_index"]) for g in decode_groups(
        read_tar_members(tmp_path / "s.tar")) for r, key in enumerate(g.keys())]
    prep = [(s["__key__"], s["seq"], s["tss_index"]) for s in unpack_groups(
        read_tar_members(tmp_path / "s.tar"))]
    assert [(k, y) for k, _, y in mine] == [(k, y) for k, _, y in prep]
    assert all((a == b).all() for (_, a, _), (_, b, _) in zip(mine, prep, strict=True))


def test_decode_groups_raises_without_reference(tmp_path):
    _tiny_shard(tmp_path / "s.tar")
    raw = [s for s in read_tar_members(tmp_path / "s.tar") if "json" in s]
    with pytest.raises(ShardFormatError, match="comes before the reference window"):
        list(decode_groups(raw))


def test_tiny_shard_json_is_what_prep_writes(tmp_path):
    """Guard: the tiny shard's JSON has every field unpack_groups reads."""
    _tiny_shard(tmp_path / "s.tar")
    metas = [json.loads(s["json"]) for s in read_tar_members(tmp_path / "s.tar") if "json" in s]
    assert [m["individuals"] for m in metas] == [["I0", "I1"], ["I2"]]


def _study(tmp_path, n_shards=4, genes=6, per_gene=20, group=10):
    """n_shards shards of `genes` genes x `per_gene` individuals, groups of `group` (W = 10)."""
    urls, shard, groups, keys, gene = [], [], [], [], []
    for s in range(n_shards):
        path = tmp_path / f"s{s}.tar"
        w = ShardWriter(path)
        for g in range(genes):
            name = f"G{s}_{g}.1"
            w.add_reference(name, encode_reference(REF))
            for k, lo in enumerate(range(0, per_gene, group)):
                inds = [f"I{i}" for i in range(lo, lo + group)]
                meta = {"gene": name, "chrom": "22", "tss": 100, "strand": "+", "split": "train",
                        "length": 6, "flank": 2, "window": 10, "tss_index": 5,
                        "reverse_complemented": False, "build": "b",
                        "individuals": inds, "populations": ["EUR"] * group,
                        "applied": [[0, 0]] * group}
                key = group_key(name, "train", k)
                w.add_group(key, encode_group(np.stack([_haps(0)] * group), REF), meta)
                groups += [key] * group
                keys += [sample_key(name, i) for i in inds]
                shard += [s] * group
                gene += [s * genes + g] * group
        w.close()
        urls.append(str(path))
    n = len(keys)
    return SplitIndex(split="train", urls=urls, shard=np.array(shard, np.int32), group=groups,
                      key=keys, gene=np.array(gene, np.int32),
                      genes=[str(g) for g in range(n_shards * genes)], P=np.zeros(n),
                      row=np.arange(n), length=6, flank=2)


def _peak_held(events, chunks):
    """Most samples delivered but not yet handed on (their chunk incomplete) at any time."""
    need = [set(c[c >= 0].tolist()) for c in chunks]
    arrived, nxt, held, peak = set(), 0, 0, 0
    for pos, _ in events:
        arrived.add(pos)
        held += 1
        while nxt < len(need) and need[nxt] <= arrived:
            held -= len(need[nxt])
            nxt += 1
        peak = max(peak, held)
    assert nxt == len(need) and len(arrived) == sum(map(len, need))
    return peak


def test_read_interleaved_reads_lanes_side_by_side(tmp_path):
    index = _study(tmp_path)  # 480 samples in 4 shards of 6 genes x 20 (groups of 10)
    perm = interleave_lanes(len(index), 4, 10, seeded_rng(0, "t"))
    chunks = [perm[i:i + 40, None] for i in range(0, len(perm), 40)]
    assert len({int(index.gene[p]) for p in perm[:4]}) == 4
    events = list(read_interleaved(index, chunks))
    assert sorted(p for p, _ in events) == list(range(len(index)))
    assert {int(index.shard[p]) for p, _ in events[:40]} == {0, 1, 2, 3}  # all lanes at once
    # about a chunk plus a decoded group per lane, where reading shard after shard holds
    # most of what a shard's lane will need later
    peak = _peak_held(iter(events), chunks)
    assert peak <= 40 + 4 * 10
    wanted = [(s, {index.key[p]: int(p) for p in np.flatnonzero(index.shard == s)})
              for s in range(4)]
    assert _peak_held(read_rows(index, wanted), chunks) > 2 * peak
    for pos, (group, row) in events[:5]:
        assert group.meta["individuals"][row] == index.key[pos].split("__")[1]
