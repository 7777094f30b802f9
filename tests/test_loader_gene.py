"""The ``gene`` loader mode: one-gene batches (plan on literal arrays, loader on the demo shards)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from loader import make_loader
from loader.order import block_shuffle, seeded_rng
from loader.plan import balanced_batches, eval_gene_batches, gene_batch_count, train_gene_batches
from loader.ranks import rank_batches
from tests.loader_demo import demo_shards

L = 49_152


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return demo_shards(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def manifest(shards) -> pl.DataFrame:
    return pl.read_parquet(shards / "manifest.parquet").with_row_index("row_number")


# -- plan ---------------------------------------------------------------------------------------


def test_balanced_batches_literal():
    keys = np.array([7, 7, 7, 7, 7, 7, 7, 7, 7, 3, 5, 5])  # 9 of key 7, 1 of 3, 2 of 5
    pos = np.arange(12) + 100
    got = balanced_batches(keys, pos, 8)
    assert got.tolist() == [[100, 102, 104, 106, 108, -1, -1, -1],  # 9 -> 5 + 4, not 8 + 1
                            [101, 103, 105, 107, -1, -1, -1, -1],
                            [109, -1, -1, -1, -1, -1, -1, -1],
                            [110, 111, -1, -1, -1, -1, -1, -1]]
    assert balanced_batches(keys, pos, 8, min_size=2).tolist() == [got[0].tolist(),
                                                                   got[1].tolist(),
                                                                   got[3].tolist()]
    assert balanced_batches(keys, pos, 3).tolist() == [  # dealt round-robin over 3 rows
        [100, 103, 106], [101, 104, 107], [102, 105, 108], [109, -1, -1], [110, 111, -1]]


def test_balanced_batches_shuffles_inside_keys_only():
    keys = np.repeat([2, 0, 1], [10, 7, 12])
    pos = np.arange(len(keys))
    got = balanced_batches(keys, pos, 4, rng=seeded_rng(0, "t"))
    assert got.tolist() != balanced_batches(keys, pos, 4).tolist()
    for row in got:
        assert len(set(keys[row[row >= 0]].tolist())) == 1
    flat = got[got >= 0]
    assert sorted(flat.tolist()) == pos.tolist()
    assert keys[flat].tolist() == sorted(keys.tolist(), key=[2, 0, 1].index)  # key order kept


def test_block_shuffle_permutes_inside_blocks():
    perm = block_shuffle(10, 4, seeded_rng(0, "b"))
    assert sorted(perm[:4].tolist()) == [0, 1, 2, 3] and sorted(perm[8:].tolist()) == [8, 9]
    assert block_shuffle(5, 1, seeded_rng(0, "b")).tolist() == [0, 1, 2, 3, 4]


def test_train_gene_batches_one_gene_per_batch_every_sample_once():
    gene = np.repeat(np.arange(6), [20, 3, 1, 17, 9, 30])  # gene 2: a lone individual
    shard = np.repeat([0, 1, 2], [24, 26, 30])  # gene 3 spans shards 0 and 1
    total = gene_batch_count(shard, gene, 8)
    got = train_gene_batches(shard, gene, 3, total, 8, seed=0, epoch=0, block=4)
    assert got.shape == (total, 8)
    for row in got:
        assert len(set(gene[row[row >= 0]].tolist())) == 1 and (row >= 0).sum() >= 2
    flat = got[got >= 0]
    assert sorted(flat.tolist()) == [i for i in range(len(gene)) if gene[i] != 2]
    again = train_gene_batches(shard, gene, 3, total, 8, seed=0, epoch=0, block=4)
    assert got.tolist() == again.tolist()
    other = train_gene_batches(shard, gene, 3, total, 8, seed=0, epoch=1, block=4)
    assert other.tolist() != got.tolist()
    longer = train_gene_batches(shard, gene, 3, total + 5, 8, seed=0, epoch=0, block=4)
    assert longer[:total].tolist() == got.tolist()  # a second pass follows the first


def test_train_gene_batches_raises_without_pairs():
    with pytest.raises(ValueError, match="two individuals"):
        train_gene_batches(np.zeros(3, int), np.arange(3), 1, 1, 8, seed=0, epoch=0)


def test_eval_gene_batches_and_rank_batches_cover_everything_once():
    gene = np.repeat([4, 1, 3], [5, 1, 11])
    batches = eval_gene_batches(gene, 4)
    assert batches.tolist() == [[0, 2, 4, -1], [1, 3, -1, -1], [5, -1, -1, -1],
                                [6, 9, 12, 15], [7, 10, 13, 16], [8, 11, 14, -1]]
    parts = [rank_batches(batches, r, 4, 2, pad=True)[:, 0] for r in range(4)]
    assert parts[0].tolist() == [0, 2, 4, -1, -1, -1, -1, -1]  # 1 batch + 1 padding batch
    flat = np.concatenate(parts)
    assert sorted(flat[flat >= 0].tolist()) == list(range(17))
    assert rank_batches(batches, 1, 2, 3, pad=False)[:, 0].tolist() == batches[3:].ravel().tolist()


# -- loader on the demo shards --------------------------------------------------------------------


def _batches(loader, stop=None):
    out = []
    for i, b in enumerate(loader):
        out.append(b)
        if stop is not None and i + 1 == stop:
            break
    return out


def _one_gene(b) -> str:
    genes = {g for g, ok in zip(b["gene"], b["valid"].tolist(), strict=True) if ok}
    assert len(genes) == 1, f"batch {b['batch']} mixes genes {genes}"
    return genes.pop()


def test_gene_mode_train_two_ranks(shards, manifest):
    train = manifest.filter(pl.col("split") == "train")
    gene_of = dict(zip(train["row_number"], train["gene"], strict=True))
    ranks = [make_loader(shards, "train", "gene", 8, rank=r, world_size=2, num_workers=2)
             for r in range(2)]
    assert len(ranks[0]) == len(ranks[1])
    rows = []
    for lo in ranks:
        batches = _batches(lo)
        assert len(batches) == len(lo)
        for b in batches:
            g = _one_gene(b)
            assert b["seq"].shape == (8, 2, L) and b["valid"].sum() >= 2
            assert all(gene_of[i] == g for i in b["index"][b["valid"]].tolist())
            assert b["index"][~b["valid"]].eq(-1).all()
            rows += b["index"][b["valid"]].tolist()
        assert len({_one_gene(b) for b in batches[:8]}) > 1  # batches of genes shuffled
    # 26 genes x 123 individuals, 8 + 8 batches per gene and shard run: nothing dropped
    assert len(rows) == len(set(rows)) == train.height
    assert make_loader(shards, "train", "gene", 8, rank=1, world_size=2).items(0).tolist() == \
        ranks[1].items(0).tolist()  # every rank plans the same epoch
    assert ranks[0].items(0).tolist() != ranks[0].items(1).tolist()


def test_gene_mode_eval_every_sample_once_in_fixed_order(shards, manifest):
    val = manifest.filter(pl.col("split") == "val")
    got, orders = [], []
    for r in range(3):
        loader = make_loader(shards, "val", "gene", 8, rank=r, world_size=3, num_workers=2)
        batches = _batches(loader)
        assert len(batches) == len(loader) == 9  # 26 genes of 7 -> 26 batches over 3 ranks
        for b in batches:
            if b["valid"].any():
                _one_gene(b)
            assert b["shift"].eq(0).all() and not b["rc"].any()
            got += b["index"][b["valid"]].tolist()
        orders.append([b["index"].tolist() for b in batches])
    assert sorted(got) == val["row_number"].to_list()
    again = make_loader(shards, "val", "gene", 8, rank=2, world_size=3, num_workers=2)
    assert [b["index"].tolist() for b in again] == orders[2]


def test_gene_mode_resume_mid_epoch_equals_uninterrupted(shards):
    def run(loader, stop=None):
        return [(b["index"].tolist(), b["shift"].tolist(), b["rc"].tolist(),
                 int(b["seq"].sum())) for b in _batches(loader, stop)]

    kw = {"num_workers": 2, "epoch_batches": 30, "shuffle_buffer": 64}
    full = run(make_loader(shards, "train", "gene", 8, **kw))
    first = make_loader(shards, "train", "gene", 8, **kw)
    head = run(first, stop=11)
    resumed = make_loader(shards, "train", "gene", 8, **kw)
    resumed.load_state_dict(first.state_dict())
    assert (resumed.epoch, resumed.batch) == (0, 11)
    assert head + run(resumed) == full
    shifts = {s for _, sh, _, _ in full for s in sh}
    assert len(shifts) > 1  # augmented, per sample


def test_gene_mode_raises_when_a_rank_gets_no_batch(shards):
    with pytest.raises(ValueError, match="do not give one batch"):
        make_loader(shards, "train", "gene", 8, rank=0, world_size=1000)
