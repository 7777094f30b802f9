"""loader.dataloader on the real chr22 demo shards: modes, epochs, resume, augmentation, errors.

Ranks are simulated in one process (``rank=``, ``world_size=``); tests/test_loader_distributed.py
runs real processes.
"""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from loader import ShardFormatError, make_loader, reverse_complement
from loader.augment import crop
from prep.encoding import reverse_complement as np_reverse_complement
from prep.shard_tar import iter_shard
from tests.loader_demo import demo_shards

L = 49_152
FLANK = 8


@pytest.fixture(scope="session")
def shards(tmp_path_factory) -> Path:
    return demo_shards(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def manifest(shards) -> pl.DataFrame:
    return pl.read_parquet(shards / "manifest.parquet").with_row_index("row")


@pytest.fixture(scope="session")
def stored(shards) -> dict:
    """Manifest row -> the stored (2, W) window, for the train split."""
    m = pl.read_parquet(shards / "manifest.parquet").with_row_index("row")
    row_of = dict(zip(m["key"], m["row"], strict=True))
    out = {}
    for path in sorted((shards / "train").glob("*.tar")):
        for s in iter_shard(path):
            out[row_of[s["__key__"]]] = (np.array(s["seq"]), s["tss_index"])
    return out


def _indexes(loader) -> list[list[int]]:
    return [b["index"].tolist() for b in loader]


def test_train_epoch_has_one_pass_split_evenly_over_ranks(shards, manifest):
    n = manifest.filter(pl.col("split") == "train").height  # 3198 in 4 uneven shards
    ranks = [make_loader(shards, "train", "train", 8, rank=r, world_size=2, num_workers=2)
             for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == n // 16
    seen = [_indexes(lo) for lo in ranks]
    assert [len(s) for s in seen] == [n // 16, n // 16]
    rows = [i for s in seen for b in s for i in b]
    assert len(rows) == len(set(rows)) == n // 16 * 16  # no sample twice in an epoch
    assert set(rows) <= set(manifest.filter(pl.col("split") == "train")["row"].to_list())
    assert ranks[0].epoch == 1 and ranks[0].batch == 0


def test_train_is_reproducible_and_epochs_differ(shards):
    a = make_loader(shards, "train", "train", 8, num_workers=2, epoch_batches=12)
    b = make_loader(shards, "train", "train", 8, num_workers=2, epoch_batches=12)
    first = _indexes(a)
    assert first == _indexes(b)
    assert _indexes(a) != first  # epoch 1
    c = make_loader(shards, "train", "train", 8, num_workers=2, epoch_batches=12, seed=1)
    assert _indexes(c) != first


def test_resume_mid_epoch_continues_exactly(shards):
    def run(loader, stop=None):
        out = []
        for i, b in enumerate(loader):
            out.append((b["index"].tolist(), b["shift"].tolist(), b["seq"].sum().item()))
            if stop is not None and i + 1 == stop:
                break
        return out

    full = run(make_loader(shards, "train", "train", 8, num_workers=2, epoch_batches=40))
    first = make_loader(shards, "train", "train", 8, num_workers=2, epoch_batches=40)
    head = run(first, stop=13)
    state = first.state_dict()
    assert (state["epoch"], state["batch"]) == (0, 13)
    resumed = make_loader(shards, "train", "train", 8, num_workers=2, epoch_batches=40)
    resumed.load_state_dict(state)
    assert head + run(resumed) == full
    assert resumed.state_dict()["epoch"] == 1


def test_resume_with_other_workers_starts_next_epoch(shards):
    a = make_loader(shards, "train", "train", 8, num_workers=2, epoch_batches=10)
    for i, _ in enumerate(a):
        if i == 2:
            break
    b = make_loader(shards, "train", "train", 8, num_workers=1, epoch_batches=10)
    b.load_state_dict(a.state_dict())
    assert (b.epoch, b.batch) == (1, 0)


def test_train_augmentation_on_real_sequences(shards, stored):
    loader = make_loader(shards, "train", "train", 8, num_workers=2, epoch_batches=30)
    shifts, flips = set(), set()
    for batch in loader:
        for i in range(8):
            row, s, rc = int(batch["index"][i]), int(batch["shift"][i]), bool(batch["rc"][i])
            seq, tss_index = stored[row]
            got = batch["seq"][i].numpy()
            fwd = np_reverse_complement(got) if rc else got
            # the window's bases moved right by s: the unshifted crop starts s bases later
            assert (fwd == seq[:, FLANK - s: FLANK - s + L]).all()
            assert (got == crop(seq, tss_index, FLANK, shift=s, reverse=rc)[0]).all()
            tss = L // 2 + s
            assert int(batch["tss_index"][i]) == (L - 1 - tss if rc else tss)
            shifts.add(s)
            flips.add(rc)
    assert shifts == set(range(-3, 4)) and flips == {False, True}


def test_reverse_complement_twice_is_identity_on_real_batch(shards):
    batch = next(iter(make_loader(shards, "val", "eval", 4, num_workers=0)))
    seq = batch["seq"]
    once = reverse_complement(seq)
    assert (once.numpy() == np_reverse_complement(seq.numpy())).all()
    assert torch.equal(reverse_complement(once), seq)


def test_shift_fill_n_on_real_sequences(shards, stored):
    loader = make_loader(shards, "train", "train", 8, num_workers=0, epoch_batches=5,
                         shift_fill="N", rc_prob=0.0)
    for batch in loader:
        for i in range(8):
            s = int(batch["shift"][i])
            seq, _ = stored[int(batch["index"][i])]
            got = batch["seq"][i].numpy()
            centre = seq[:, FLANK:FLANK + L]
            if s > 0:
                assert (got[:, :s] == 4).all() and (got[:, s:] == centre[:, :L - s]).all()
            elif s < 0:
                assert (got[:, L + s:] == 4).all() and (got[:, :L + s] == centre[:, -s:]).all()
            else:
                assert (got == centre).all()


def test_eval_covers_every_sample_once(shards, manifest):
    for split in ("val", "test"):
        want = manifest.filter(pl.col("split") == split)["row"].to_list()
        got, counts = [], []
        for r in range(3):
            loader = make_loader(shards, split, "eval", 7, rank=r, world_size=3, num_workers=2)
            batches = list(loader)
            counts.append(len(batches))
            last = [i for b in batches for i in b["index"].tolist()]
            for b in batches:
                assert b["seq"].shape == (7, 2, L)
                got += b["index"][b["valid"]].tolist()
                assert torch.isnan(b["Y"][~b["valid"]]).all()
                assert b["shift"].eq(0).all() and not b["rc"].any()
        assert len(set(counts)) == 1
        assert sorted(got) == want and len(got) == len(want)  # each sample once
    again = make_loader(shards, "test", "eval", 7, rank=2, world_size=3, num_workers=2)
    assert [i for b in again for i in b["index"].tolist()] == last  # a fixed order


def test_eval_targets_match_manifest(shards, manifest):
    batch = next(iter(make_loader(shards, "val", "eval", 8, num_workers=0)))
    rows = manifest.filter(pl.col("row").is_in(batch["index"].tolist())).sort("row")
    assert batch["individual"] == rows["individual"].to_list()
    np.testing.assert_allclose(batch["Y"].numpy(), rows["Y"].to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(batch["P"].numpy(), rows["P"].to_numpy(), rtol=1e-6)


def test_pairwise_train_pairs_same_gene_different_individuals(shards, manifest):
    loader = make_loader(shards, "train", "pairwise", 8, num_workers=2, min_percentile_diff=25.0)
    genes = manifest.filter(pl.col("split") == "train")["gene"].n_unique()
    assert len(loader) == genes * 250 // 8
    gene_of = dict(zip(manifest["row"], manifest["gene"], strict=True))
    ind_of = dict(zip(manifest["row"], manifest["individual"], strict=True))
    for i, b in enumerate(loader):
        assert b["seq_a"].shape == b["seq_b"].shape == (8, 2, L)
        for a, c, g in zip(b["index_a"].tolist(), b["index_b"].tolist(), b["gene"], strict=True):
            assert gene_of[a] == gene_of[c] == g and ind_of[a] != ind_of[c]
        assert (b["P_a"] - b["P_b"]).abs().gt(25).all()
        assert b["individual_a"] != b["individual_b"]
        if i == 100:
            break
    assert loader.items(0).tolist() != loader.items(1).tolist()  # fresh pairs every epoch


def test_pairwise_val_pairs_are_fixed_and_complete(shards, manifest):
    val = manifest.filter(pl.col("split") == "val")
    per_gene = val.group_by("gene").len()
    genes = per_gene.filter(pl.col("len") >= 2).height
    ranks = [make_loader(shards, "val", "pairwise", 8, rank=r, world_size=2, num_workers=1)
             for r in range(2)]
    assert len(ranks[0]) == len(ranks[1])

    def pairs(loaders):
        return [p for lo in loaders for b in lo
                for p, ok in zip(zip(b["index_a"].tolist(), b["index_b"].tolist(), strict=True),
                                 b["valid"].tolist(), strict=True) if ok]

    first = pairs(ranks)
    assert len(first) == genes * 100
    assert first == pairs(ranks)  # the next epoch draws the same pairs


def test_bad_settings_raise(shards):
    with pytest.raises(ValueError, match="flank"):
        make_loader(shards, "train", "train", 8, max_shift=9)
    make_loader(shards, "train", "train", 8, max_shift=9, shift_fill="N")
    with pytest.raises(ValueError, match="mode"):
        make_loader(shards, "train", "shuffle", 8)
    with pytest.raises(TypeError, match="unknown setting"):
        make_loader(shards, "train", "train", 8, buffer=3)
    with pytest.raises(ValueError, match="exceeds the stored window"):
        make_loader(shards, "train", "train", 8, length=2 * L)
    with pytest.raises(ShardFormatError, match="no sample of split 'dev'"):
        make_loader(shards, "dev", "eval", 8)


def test_cropped_length(shards):
    batch = next(iter(make_loader(shards, "val", "eval", 2, num_workers=0, length=1024)))
    assert batch["seq"].shape == (2, 2, 1024)
    assert batch["tss_index"].tolist() == [512, 512]


@pytest.fixture()
def broken(shards, tmp_path) -> Path:
    """A copy of the demo shards with train/shard-000001.tar cut inside a haplotype member."""
    copy = tmp_path / "shards"
    shutil.copytree(shards, copy)
    path = copy / "train" / "shard-000001.tar"
    with tarfile.open(path) as tar:
        member = [m for m in tar.getmembers() if m.name.endswith(".hap.zst")][5]
    path.write_bytes(path.read_bytes()[: member.offset_data + member.size // 2])
    return copy


def test_truncated_shard_error_names_it(broken):
    loader = make_loader(broken, "train", "eval", 8, num_workers=2)
    with pytest.raises(ShardFormatError, match="shard-000001.tar"):
        list(loader)


def test_worker_error_is_the_original_error_in_the_main_process(broken):
    """A worker's error reaches the caller as itself: same type and message as with 0 workers,
    no "Caught ... in DataLoader worker process" wrapper or worker traceback."""
    errors = []
    for nw in (0, 2):
        with pytest.raises(ShardFormatError) as info:
            list(make_loader(broken, "train", "eval", 8, num_workers=nw))
        errors.append(info.value)
    assert type(errors[1]) is type(errors[0]) and str(errors[1]) == str(errors[0])
    assert "worker process" not in str(errors[1]) and "Traceback" not in str(errors[1])
    assert "shard-000001.tar" in str(errors[1])


def test_truncated_shard_skipped_and_counted(broken, manifest, caplog):
    loader = make_loader(broken, "train", "eval", 8, num_workers=2, on_error="skip")
    batches = list(loader)
    assert len(batches) == len(loader)
    valid = sum(int(b["valid"].sum()) for b in batches)
    in_shard = manifest.filter(pl.col("shard") == "train/shard-000001.tar").height
    n = manifest.filter(pl.col("split") == "train").height
    assert n - in_shard < valid < n
    assert list(loader.skipped) == [str(broken / "train" / "shard-000001.tar")]
    assert "skipped" in caplog.text and "shard-000001.tar" in caplog.text


def test_corrupt_header_is_reported_as_missing_samples(shards, tmp_path):
    copy = tmp_path / "shards"
    shutil.copytree(shards, copy)
    path = copy / "val" / "shard-000000.tar"
    with tarfile.open(path) as tar:
        member = tar.getmembers()[4]
    data = bytearray(path.read_bytes())
    data[member.offset: member.offset + 100] = b"x" * 100  # tar then ends silently here
    path.write_bytes(bytes(data))
    with pytest.raises(ShardFormatError, match=r"shard-000000.tar lacks \d+ sample"):
        list(make_loader(copy, "val", "eval", 8, num_workers=0))


def test_train_batches_hold_about_batch_size_genes(shards, manifest):
    """Shards are gene-sorted (123 train individuals per gene); lanes mix genes in a batch."""
    def genes_per_batch(**kw):
        loader = make_loader(shards, "train", "train", 8, num_workers=2, **kw)
        return [len(set(b["gene"])) for b in loader]

    mixed = genes_per_batch()
    assert np.mean(mixed) > 7.5
    assert np.mean(genes_per_batch(lanes=1)) < 6.5  # one lane: consecutive samples


def test_pairwise_train_batches_mix_genes(shards, manifest):
    """A gene's pairs are drawn together, but lanes spread them: a batch of 8 pairs holds ~8 genes
    (one lane without a shuffle block reads a gene's 250 pairs in a row: ~31 one-gene batches)."""
    def genes_per_batch(**kw):
        loader = make_loader(shards, "train", "pairwise", 8, num_workers=1, **kw)
        return [len(set(b["gene"])) for b in loader]

    assert np.mean(genes_per_batch()) > 7.5
    assert np.mean(genes_per_batch(lanes=1, shuffle_buffer=8)) < 1.2


@pytest.mark.parametrize("mode", ["train", "pairwise", "gene"])
def test_short_epochs_span_every_gene(shards, manifest, mode):
    """epoch_batches below a pass thins the pass evenly instead of cutting it: every gene of the
    split is in a short epoch (a cut would keep the genes of the first shards read)."""
    genes = set(manifest.filter(pl.col("split") == "train")["gene"].unique().to_list())
    loader = make_loader(shards, "train", mode, 4, num_workers=0, epoch_batches=40, length=256)
    seen = [g for b in loader for g, ok in zip(b["gene"], b["valid"].tolist(), strict=True) if ok]
    assert len(loader) == 40 and set(seen) == genes
