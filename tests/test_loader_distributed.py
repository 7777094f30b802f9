"""loader.distributed, and the loader under real DDP processes: 2 ranks x 2 workers, gloo, CPU.

Each rank runs one collective per batch, so unequal batch counts would hang (and time out)
instead of passing.
"""

from __future__ import annotations

import datetime
import json
import os
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from loader import gather_predictions, make_loader, merge_batches, rank_and_world
from tests.loader_demo import demo_shards

WORLD = 2


@pytest.fixture(scope="session")
def shards(tmp_path_factory) -> Path:
    return demo_shards(tmp_path_factory.getbasetemp())


def test_gather_predictions_single_process_drops_padding_and_sorts():
    local = {"index": torch.tensor([5, 2, -1]), "valid": torch.tensor([True, True, False]),
             "pred": torch.tensor([0.5, 0.2, 9.0], dtype=torch.bfloat16), "gene": ["b", "a", ""]}
    out = gather_predictions(local)
    assert out["index"].tolist() == [2, 5]
    assert out["gene"] == ["a", "b"]
    np.testing.assert_allclose(out["pred"], [0.2, 0.5], rtol=1e-2)


def test_gather_predictions_raises():
    with pytest.raises(ValueError, match="valid"):
        gather_predictions({"index": [1]})
    with pytest.raises(ValueError, match="different lengths"):
        gather_predictions({"index": [1, 2], "valid": [True]})
    with pytest.raises(ValueError, match="more than one row"):
        gather_predictions({"index": np.array([1, 1]), "valid": np.array([True, True])})


def test_merge_batches_concatenates():
    out = merge_batches([{"a": torch.tensor([1, 2]), "g": ["x", "y"]},
                         {"a": torch.tensor([3]), "g": ["z"]}])
    assert out["a"].tolist() == [1, 2, 3] and out["g"] == ["x", "y", "z"]


def test_rank_and_world(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert rank_and_world() == (1, 4)
    assert rank_and_world(0, 2) == (0, 2)
    with pytest.raises(ValueError, match="not in"):
        rank_and_world(2, 2)


def _rank_main(rank: int, shards: str, init_file: str, out_dir: str) -> None:
    # Ranks started by spawn would also spawn their DataLoader workers (each re-importing torch);
    # torchrun's ranks are plain processes whose workers fork, as here.
    fork = {"worker_start": "fork"}
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=WORLD, timeout=datetime.timedelta(seconds=60))
    try:
        res = {}
        # train: 5 uneven shards (738, 738, 738, 738, 246 train samples) over 2 ranks x 2 workers
        loader = make_loader(shards, "train", "train", 8, num_workers=2, **fork)
        rows = []
        for b in loader:
            dist.all_reduce(torch.ones(1))
            rows += b["index"].tolist()
        res["train"] = {"len": len(loader), "batches": len(rows) // 8, "rows": rows}
        # eval with padding (832 test samples, batches of 7), gathered on every rank
        ev = make_loader(shards, "test", "eval", 7, num_workers=2, **fork)
        parts = []
        for b in ev:
            dist.all_reduce(torch.ones(1))
            parts.append({"index": b["index"], "valid": b["valid"], "pred": b["Y"] * 2,
                          "gene": b["gene"]})
        got = gather_predictions(merge_batches(parts))
        res["eval"] = {"batches": len(parts), "index": got["index"].tolist(),
                       "pred": got["pred"].tolist(), "gene": got["gene"]}
        # pairwise: dynamic train pairs
        pw = make_loader(shards, "train", "pairwise", 8, num_workers=2, epoch_batches=6,
                         **fork)
        pairs = []
        for b in pw:
            dist.all_reduce(torch.ones(1))
            pairs += list(zip(b["index_a"].tolist(), b["index_b"].tolist(), b["gene"],
                              strict=True))
        res["pairs"] = pairs
        # gene mode: one-gene batches
        gl = make_loader(shards, "train", "gene", 8, num_workers=2, **fork)
        batches = []
        for b in gl:
            dist.all_reduce(torch.ones(1))
            batches.append([i for i, ok in zip(b["index"].tolist(), b["valid"].tolist(),
                                               strict=True) if ok])
        res["gene"] = {"len": len(gl), "batches": batches}
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(res))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_results(shards, tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("ddp")
    ctx = mp.start_processes(_rank_main, args=(str(shards), str(out / "rdzv"), str(out)),
                             nprocs=WORLD, join=False, start_method="spawn")
    deadline = time.monotonic() + 150
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                os.kill(p.pid, 9)
            pytest.fail("DDP ranks did not finish in 150 s (unequal batch counts hang)")
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(WORLD)]


def test_ddp_train_equal_batch_counts_with_uneven_shards(ddp_results, shards):
    n = pl.read_parquet(shards / "manifest.parquet").filter(pl.col("split") == "train").height
    counts = [r["train"]["batches"] for r in ddp_results]
    assert counts == [r["train"]["len"] for r in ddp_results] == [n // 16, n // 16]
    rows = ddp_results[0]["train"]["rows"] + ddp_results[1]["train"]["rows"]
    assert len(set(rows)) == len(rows)  # ranks read disjoint samples


def test_ddp_eval_covers_every_sample_exactly_once(ddp_results, shards):
    m = pl.read_parquet(shards / "manifest.parquet").with_row_index("row_number")
    test = m.filter(pl.col("split") == "test")
    a, b = (r["eval"] for r in ddp_results)
    assert a["batches"] == b["batches"] == -(-test.height // 2 // 7)
    assert a == b  # gathered on every rank
    assert a["index"] == test["row_number"].to_list()  # each once, manifest order
    assert a["gene"] == test["gene"].to_list()
    np.testing.assert_allclose(a["pred"], 2 * test["Y"].to_numpy(), rtol=1e-6)


def test_ddp_gene_mode_equal_counts_one_gene_per_batch_as_planned(ddp_results, shards):
    m = pl.read_parquet(shards / "manifest.parquet").with_row_index("row_number")
    gene = dict(zip(m["row_number"], m["gene"], strict=True))
    lens = [r["gene"]["len"] for r in ddp_results]
    assert [len(r["gene"]["batches"]) for r in ddp_results] == lens and lens[0] == lens[1]
    for rank, r in enumerate(ddp_results):
        assert all(len({gene[i] for i in b}) == 1 for b in r["gene"]["batches"])
        plan = make_loader(shards, "train", "gene", 8, rank=rank, world_size=WORLD)
        items = plan.items(0).reshape(-1, 8)
        want = sorted(tuple(sorted(plan.index.row[x[x >= 0]].tolist())) for x in items)
        assert sorted(tuple(sorted(b)) for b in r["gene"]["batches"]) == want
    a, b = ([i for x in r["gene"]["batches"] for i in x] for r in ddp_results)
    assert not set(a) & set(b)


def test_ddp_pairs_same_gene_different_individuals(ddp_results, shards):
    m = pl.read_parquet(shards / "manifest.parquet").with_row_index("row_number")
    gene = dict(zip(m["row_number"], m["gene"], strict=True))
    ind = dict(zip(m["row_number"], m["individual"], strict=True))
    for r in ddp_results:
        assert len(r["pairs"]) == 6 * 8
        for a, b, g in r["pairs"]:
            assert gene[a] == gene[b] == g and ind[a] != ind[b]
    assert ddp_results[0]["pairs"] != ddp_results[1]["pairs"]
