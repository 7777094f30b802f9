"""loader.order, loader.plan, loader.ranks: seeded orders, pair sampling, rank and worker
layouts (no shards needed)."""

from __future__ import annotations

import numpy as np
import pytest

from hapflow.sections import LoaderConfig
from loader.dataloader import ShardLoader
from loader.order import (
    group_runs,
    interleave_lanes,
    seeded_rng,
    shard_order,
    shuffle_segments,
    stream_order,
)
from loader.plan import (
    _gene_runs,
    draw_pairs,
    eval_samples,
    fixed_pairs,
    train_pairs,
    train_samples,
)
from loader.ranks import (
    eval_batches,
    rank_items,
    train_batches,
    worker_batch_counts,
    worker_items,
    worker_skip,
)
from loader.sources import SplitIndex


def test_seeded_rng_depends_on_keys_only():
    a = seeded_rng(0, "shuffle", 1, 2).integers(1 << 30, size=4)
    b = seeded_rng(0, "shuffle", 1, 2).integers(1 << 30, size=4)
    c = seeded_rng(0, "shuffle", 1, 3).integers(1 << 30, size=4)
    d = seeded_rng(0, "augment", 1, 2).integers(1 << 30, size=4)
    assert a.tolist() == b.tolist()
    assert a.tolist() != c.tolist() and a.tolist() != d.tolist()


def test_stream_order_literal():
    shard = np.array([0, 0, 1, 1, 1, 2])
    assert stream_order(shard, np.array([2, 0, 1])).tolist() == [5, 0, 1, 2, 3, 4]
    assert stream_order(shard, np.array([1, 2, 0])).tolist() == [2, 3, 4, 5, 0, 1]


def test_shard_order_changes_with_epoch_and_is_reproducible():
    orders = {tuple(shard_order(8, 0, e).tolist()) for e in range(6)}
    assert len(orders) > 1
    assert shard_order(8, 0, 3).tolist() == shard_order(8, 0, 3).tolist()


def test_train_samples_one_pass_then_cycles():
    shard = np.array([0, 0, 1, 1, 1, 2, 2])
    one = train_samples(shard, 3, 7, seed=1, epoch=0)[:, 0]
    assert sorted(one.tolist()) == list(range(7))
    more = train_samples(shard, 3, 10, seed=1, epoch=0)[:, 0]
    assert more[:7].tolist() == one.tolist()
    assert len(set(more[7:].tolist())) == 3
    assert train_samples(shard, 3, 7, seed=1, epoch=1).shape == (7, 1)


def test_eval_samples_literal():
    assert eval_samples(3).tolist() == [[0], [1], [2]]


def test_draw_pairs_distinct_members_and_pairs():
    p = np.linspace(0, 100, 30)
    pairs = draw_pairs(p, 50, seeded_rng(0, "pairs"))
    assert pairs.shape == (50, 2)
    assert (pairs[:, 0] != pairs[:, 1]).all()
    assert len({tuple(sorted(x)) for x in pairs.tolist()}) == 50


def test_draw_pairs_min_diff_literal():
    p = np.array([0.0, 10.0, 50.0, 90.0])
    pairs = draw_pairs(p, 200, seeded_rng(0, "pairs"), min_diff=45.0)
    got = {tuple(sorted(x)) for x in pairs.tolist()}
    assert got == {(0, 2), (0, 3), (1, 3)}  # the only pairs more than 45 apart
    assert (np.abs(p[pairs[:, 0]] - p[pairs[:, 1]]) > 45).all()


def test_draw_pairs_none_eligible():
    assert draw_pairs(np.array([1.0]), 5, seeded_rng(0, "p")).shape == (0, 2)
    assert draw_pairs(np.array([5.0, 6.0]), 5, seeded_rng(0, "p"), min_diff=25).shape == (0, 2)
    two = draw_pairs(np.array([5.0, 60.0]), 3, seeded_rng(0, "p"), min_diff=25)
    assert {tuple(sorted(x)) for x in two.tolist()} == {(0, 1)} and len(two) == 3


def test_train_pairs_same_gene_and_fresh_each_epoch():
    gene = np.array([0, 0, 0, 0, 1, 1, 1, 2])
    shard = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    p = np.arange(8, dtype=float)
    e0 = train_pairs(shard, gene, p, 2, 10, 5, seed=0, epoch=0)
    e1 = train_pairs(shard, gene, p, 2, 10, 5, seed=0, epoch=1)
    assert e0.shape == (10, 2)
    assert (gene[e0[:, 0]] == gene[e0[:, 1]]).all() and (e0[:, 0] != e0[:, 1]).all()
    assert 7 not in e0  # gene 2 has a single sample: no pair
    assert e0.tolist() != e1.tolist()


def test_train_pairs_lanes_interleave_genes_and_short_epochs_thin_evenly():
    gene = np.repeat(np.arange(4), 10)  # 4 genes of 10 samples, one shard
    shard = np.zeros(40, np.int64)
    p = np.arange(40, dtype=float)
    plain = train_pairs(shard, gene, p, 1, 40, 10, seed=0, epoch=0)
    assert gene[plain[:, 0]].tolist() == np.repeat(np.arange(4), 10).tolist()  # gene by gene
    laned = train_pairs(shard, gene, p, 1, 40, 10, seed=0, epoch=0, lanes=4)
    assert sorted(map(tuple, laned.tolist())) == sorted(map(tuple, plain.tolist()))
    assert all(len(set(gene[laned[i:i + 4, 0]])) == 4 for i in range(0, 40, 4))
    short = train_pairs(shard, gene, p, 1, 8, 10, seed=0, epoch=0, lanes=4)
    assert short.shape == (8, 2) and np.bincount(gene[short[:, 0]]).tolist() == [2, 2, 2, 2]
    more = train_pairs(shard, gene, p, 1, 50, 10, seed=0, epoch=0)  # a pass and a bit
    assert more.shape == (50, 2) and (gene[more[:, 0]] == gene[more[:, 1]]).all()


def test_fixed_pairs_do_not_depend_on_epoch_or_world():
    gene = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([1.0, 50.0, 99.0, 2.0, 40.0, 80.0])
    a = fixed_pairs(gene, p, 4, seed=3)
    assert a.tolist() == fixed_pairs(gene, p, 4, seed=3).tolist()
    assert a.shape == (8, 2)
    assert (gene[a[:, 0]] == gene[a[:, 1]]).all()


def test_batch_counts():
    assert train_batches(3198, 2, 8) == 199
    assert train_batches(10, 2, 8, epoch_batches=7) == 7
    assert eval_batches(182, 2, 8) == 12
    assert eval_batches(832, 2, 7) == 60
    assert eval_batches(0, 2, 8) == 1


def test_train_batches_raises_when_a_rank_gets_no_batch():
    with pytest.raises(ValueError, match="do not fill one batch"):
        train_batches(15, 2, 8)


def test_rank_items_eval_covers_every_item_once_with_padding():
    items = eval_samples(11)
    nb = eval_batches(11, 3, 2)
    parts = [rank_items(items, r, 3, nb, 2, pad=True) for r in range(3)]
    assert all(len(x) == nb * 2 for x in parts)
    flat = np.concatenate(parts)[:, 0]
    assert sorted(flat[flat >= 0].tolist()) == list(range(11))
    assert parts[0][:, 0].tolist() == [0, 1, 2, -1]


def test_rank_items_train_literal():
    items = np.arange(12)[:, None]
    assert rank_items(items, 1, 2, 3, 2, pad=False)[:, 0].tolist() == [6, 7, 8, 9, 10, 11]


def test_worker_layout_matches_round_robin():
    assert worker_batch_counts(5, 2) == [3, 2]
    assert worker_batch_counts(1, 3) == [1, 0, 0]
    items = np.arange(10)[:, None]  # 5 batches of 2
    w0 = worker_items(items, 0, 2, 2)[:, 0].tolist()
    w1 = worker_items(items, 1, 2, 2)[:, 0].tolist()
    assert w0 == [0, 1, 2, 3, 4, 5] and w1 == [6, 7, 8, 9]
    # rank batch j is worker j % 2's batch j // 2
    order = [w0[0:2], w1[0:2], w0[2:4], w1[2:4], w0[4:6]]
    assert sorted(sum(order, [])) == list(range(10))
    assert [worker_skip(3, w, 2) for w in (0, 1)] == [2, 1]
    assert worker_skip(0, 0, 0) == 0


def _gene_runs_quadratic(gene, positions):
    """The former O(genes x samples) grouping, kept as the reference."""
    g = gene[positions]
    first = {}
    for i, x in enumerate(g.tolist()):
        first.setdefault(x, i)
    return [positions[g == x] for x in sorted(first, key=first.get)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gene_runs_equal_the_quadratic_reference(seed):
    rng = np.random.default_rng(seed)
    gene = rng.integers(0, 7, size=60)  # genes scattered, not in runs
    positions = rng.permutation(60)[:45]
    want = _gene_runs_quadratic(gene, positions)
    got = _gene_runs(gene, positions)
    assert [x.tolist() for x in got] == [x.tolist() for x in want]
    sorted_gene = np.sort(gene)  # the usual layout: each gene in one run
    assert [x.tolist() for x in _gene_runs(sorted_gene, np.arange(60))] == \
        [x.tolist() for x in _gene_runs_quadratic(sorted_gene, np.arange(60))]


def test_group_runs_literal():
    order, offsets = group_runs(np.array([5, 2, 5, 9, 2]))
    assert order.tolist() == [0, 2, 1, 4, 3] and offsets.tolist() == [0, 2, 4, 5]
    order, offsets = group_runs(np.array([3, 3, 1, 1, 1]))
    assert order.tolist() == [0, 1, 2, 3, 4] and offsets.tolist() == [0, 2, 5]
    assert group_runs(np.array([], dtype=int))[1].tolist() == [0]


def test_shuffle_segments_keeps_each_segment_in_place():
    out = shuffle_segments(np.arange(20), np.array([0, 5, 5, 20]), seeded_rng(0, "s"))
    assert sorted(out[:5].tolist()) == list(range(5))
    assert sorted(out[5:].tolist()) == list(range(5, 20)) and out.tolist() != list(range(20))


def test_large_synthetic_manifest_plans_every_mode():
    """8,000 genes x 300 individuals (2.4 M samples): the plans are O(N log N) (timed in
    benchmarks/loader_throughput.py --planning), here their results are checked."""
    genes, per = 8_000, 300
    n = genes * per
    gene = np.repeat(np.arange(genes, dtype=np.int32), per)
    shard = (np.arange(n) // 8_192).astype(np.int32)
    index = SplitIndex(split="train", urls=[f"s{i}.tar" for i in range(shard.max() + 1)],
                       shard=shard, key=[""] * n, gene=gene,
                       genes=[str(g) for g in range(genes)], P=np.linspace(0, 100, n),
                       row=np.arange(n), length=1024, flank=8)
    cfg = LoaderConfig(batch_size=8)
    gl = ShardLoader(index, cfg, "gene", rank=1, world_size=2)
    items = gl.items(0).reshape(-1, 8)
    assert len(items) == len(gl)
    ok = items >= 0
    g = gene[np.maximum(items, 0)]
    assert (np.where(ok, g, -1).max(1) == np.where(ok, g, genes).min(1)).all()  # one gene each
    valid = items[ok]
    assert np.bincount(valid, minlength=n).max() == 1 and len(valid) >= 7 * len(gl)
    tl = ShardLoader(index, cfg, "train", rank=0, world_size=2)
    seen = np.bincount(tl.items(0)[:, 0], minlength=n)
    assert seen.max() == 1 and seen.sum() == len(tl) * 8 == n // 2
    pl = ShardLoader(index, cfg, "pairwise", rank=0, world_size=2)
    assert pl.n_items == genes * cfg.pairs_per_gene


def test_interleave_lanes_literal():
    perm = interleave_lanes(10, 3, 1, seeded_rng(0, "l"))  # lanes [0, 3), [3, 6), [6, 10)
    assert perm.tolist() == [0, 3, 6, 1, 4, 7, 2, 5, 8, 9]
    perm = interleave_lanes(12, 3, 2, seeded_rng(0, "l"))
    assert sorted(perm.tolist()) == list(range(12))
    assert [x // 4 for x in perm.tolist()] == [0, 1, 2] * 4  # one item of each lane in turn
    assert sorted(perm[:6].tolist()) == [0, 1, 4, 5, 8, 9]  # each lane shuffled in blocks of 2
    assert train_samples(np.zeros(12, int), 1, 12, 0, 0, lanes=3, block=2)[:, 0].tolist() == \
        np.arange(12)[interleave_lanes(12, 3, 2, seeded_rng(0, "lanes", 0, 0))].tolist()


def test_interleave_more_lanes_than_a_batch_reads_them_spread():
    # lanes [0, 3), [3, 6), [6, 9), [9, 12) read 0, 2, 1, 3: a batch of 2 takes lanes far apart
    perm = interleave_lanes(12, 4, 1, seeded_rng(0, "l"), width=2)
    assert perm.tolist() == [0, 6, 3, 9, 1, 7, 4, 10, 2, 8, 5, 11]
    assert interleave_lanes(12, 4, 1, seeded_rng(0, "l"), width=4).tolist() == \
        interleave_lanes(12, 4, 1, seeded_rng(0, "l")).tolist()
