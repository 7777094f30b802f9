"""loader.dataloader on the real chr22 demo study in shard format 3: modes, epochs, resume,
windows against the haplotype builder, augmentation, errors.

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

from hapflow.sections import ConfigError
from loader import ShardFormatError, make_loader, reverse_complement
from prep.encoding import reverse_complement as np_reverse_complement
from tests.loader_demo import demo_reverse_minus, demo_shards
from tests.window_oracle import StudyWindows

L = 49_152
FLANK = 8


@pytest.fixture(scope="session")
def shards(tmp_path_factory) -> Path:
    return demo_shards(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def manifest(shards) -> pl.DataFrame:
    return pl.read_parquet(shards / "manifest.parquet").with_row_index("row_number")


@pytest.fixture(scope="session")
def oracle(shards) -> StudyWindows:
    return StudyWindows(shards)


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
    assert set(rows) <= set(manifest.filter(pl.col("split") == "train")["row_number"].to_list())
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


def _collect(loader, key="seq") -> tuple[np.ndarray, ...]:
    """Every valid sample of a loader's epoch: manifest rows, windows, shifts, rc, TSS index."""
    rows, seqs, shifts, rcs, tss = [], [], [], [], []
    for b in loader:
        ok = b["valid"].numpy()
        rows.append(b["index" if key == "seq" else f"index_{key[-1]}"].numpy()[ok])
        seqs.append(b[key].numpy()[ok])
        shifts.append(b["shift"].numpy()[ok])
        rcs.append(b["rc"].numpy()[ok])
        tss.append(b["tss_index"].numpy()[ok])
    return tuple(np.concatenate(x) for x in (rows, seqs, shifts, rcs, tss))


@pytest.mark.parametrize("length", [L, 4096, 128])
def test_eval_windows_equal_the_builders_at_any_length(shards, oracle, length):
    """shift 0, forward strand: every window is HaplotypeBuilder.fixed's at that length (a
    window cut from the 49,152 + 2 x 8 bp build equals a build of its own length)."""
    loader = make_loader(shards, "val", "eval", 8, num_workers=0, length=length)
    rows, seqs, shifts, rcs, tss = _collect(loader)
    assert len(rows) == 182 and not shifts.any() and not rcs.any()
    assert np.array_equal(seqs, oracle.fixed(rows, length))
    assert (tss == length // 2).all()


def test_train_augmentation_equals_the_crop_of_the_stored_window(shards, oracle):
    """Shifts of +-3 from the stored flanks and reverse complements: byte for byte what a
    format-2 loader cropped from the W = L + 2 x 8 window prep stored (tests/window_oracle.py),
    TSS index included; 2 workers."""
    loader = make_loader(shards, "train", "train", 8, num_workers=2, epoch_batches=30)
    rows, seqs, shifts, rcs, tss = _collect(loader)
    want, want_tss = oracle.cropped(rows, shifts, rcs, "flank", L)
    assert np.array_equal(seqs, want) and np.array_equal(tss, want_tss)
    assert set(shifts.tolist()) == set(range(-3, 4)) and set(rcs.tolist()) == {False, True}
    fwd = np.where(rcs[:, None, None], np.stack([np_reverse_complement(x) for x in seqs]), seqs)
    centre = oracle.fixed(rows, L + 2 * FLANK)
    for i in range(len(rows)):  # the window's bases moved right by s
        s = shifts[i]
        assert (fwd[i] == centre[i][:, FLANK - s: FLANK - s + L]).all()


@pytest.mark.parametrize("length", [L, 1024])
def test_minus_strand_genes_stored_reverse_complemented(tmp_path_factory, length):
    """[haplotypes] reverse_minus = true: a minus-strand gene's windows come reverse-
    complemented (TSS at n - 1 - n // 2) and augmentation acts on top, as prep stored them."""
    shards = demo_reverse_minus(tmp_path_factory.getbasetemp())
    loader = make_loader(shards, "train", "train", 8, num_workers=0, epoch_batches=20,
                         length=length)
    rows, seqs, shifts, rcs, tss = _collect(loader)
    oracle = StudyWindows(shards)
    minus = (oracle.manifest["strand"][rows.tolist()] == "-").to_numpy()
    assert minus.any() and (~minus).any()
    want, want_tss = oracle.cropped(rows, shifts, rcs, "flank", length)
    assert np.array_equal(seqs, want) and np.array_equal(tss, want_tss)


def test_reverse_complement_twice_is_identity_on_real_batch(shards):
    batch = next(iter(make_loader(shards, "val", "eval", 4, num_workers=0)))
    seq = batch["seq"]
    once = reverse_complement(seq)
    assert (once.numpy() == np_reverse_complement(seq.numpy())).all()
    assert torch.equal(reverse_complement(once), seq)


def test_shift_fill_n_on_real_sequences(shards, oracle):
    loader = make_loader(shards, "train", "train", 8, num_workers=0, epoch_batches=5,
                         shift_fill="N", rc_prob=0.0)
    rows, seqs, shifts, rcs, _ = _collect(loader)
    assert not rcs.any() and set(shifts.tolist()) > {0}
    centre = oracle.fixed(rows, L)
    for got, want, s in zip(seqs, centre, shifts, strict=True):
        if s > 0:
            assert (got[:, :s] == 4).all() and (got[:, s:] == want[:, :L - s]).all()
        elif s < 0:
            assert (got[:, L + s:] == 4).all() and (got[:, :L + s] == want[:, -s:]).all()
        else:
            assert (got == want).all()
    assert np.array_equal(seqs, oracle.cropped(rows, shifts, rcs, "N", L)[0])


def test_eval_covers_every_sample_once(shards, manifest):
    for split in ("val", "test"):
        want = manifest.filter(pl.col("split") == split)["row_number"].to_list()
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
    rows = manifest.filter(pl.col("row_number").is_in(batch["index"].tolist())).sort("row_number")
    assert batch["individual"] == rows["individual"].to_list()
    np.testing.assert_allclose(batch["Y"].numpy(), rows["Y"].to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(batch["P"].numpy(), rows["P"].to_numpy(), rtol=1e-6)


def test_pairwise_train_pairs_same_gene_different_individuals(shards, manifest):
    loader = make_loader(shards, "train", "pairwise", 8, num_workers=2, min_percentile_diff=25.0)
    genes = manifest.filter(pl.col("split") == "train")["gene"].n_unique()
    assert len(loader) == genes * 250 // 8
    gene_of = dict(zip(manifest["row_number"], manifest["gene"], strict=True))
    ind_of = dict(zip(manifest["row_number"], manifest["individual"], strict=True))
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
    with pytest.raises(ValueError, match="exceeds the stored window L = 49152"):
        make_loader(shards, "train", "train", 8, length=L + 128)
    with pytest.raises(ConfigError, match="multiple of 128"):
        make_loader(shards, "train", "train", 8, length=1000)
    with pytest.raises(ShardFormatError, match="no sample of split 'dev'"):
        make_loader(shards, "dev", "eval", 8)


def test_format2_shards_are_refused_naming_the_folder_and_the_fix(shards, tmp_path):
    old = tmp_path / "shards"  # a format-2 folder: split folders, a manifest with group/index
    (old / "train").mkdir(parents=True)
    shutil.copy(shards / "shard-000000.tar", old / "train" / "shard-000000.tar")
    manifest = pl.read_parquet(shards / "manifest.parquet")
    manifest.rename({"row": "index"}).with_columns(pl.lit(0).alias("group")).write_parquet(
        old / "manifest.parquet")
    with pytest.raises(ShardFormatError) as info:
        make_loader(old, "train", "train", 8)
    message = str(info.value)
    assert "format 2" in message and str(old) in message
    assert "python -m prep.shard" in message and "--overwrite" in message
    with pytest.raises(ShardFormatError, match=r"format 2.*python -m prep.shard .*--overwrite"):
        make_loader(f"{old}/train/shard-000000.tar", "train", "train", 8,
                    manifest=manifest.drop("row"))


def test_cropped_length(shards):
    batch = next(iter(make_loader(shards, "val", "eval", 2, num_workers=0, length=1024)))
    assert batch["seq"].shape == (2, 2, 1024)
    assert batch["tss_index"].tolist() == [512, 512]


def test_a_worker_reads_only_the_genes_its_batches_need(shards):
    """Memory bounded by the batches, not by what the shards hold: an eval pass over 26 genes
    holds one or two genes at a time, and the first batch reads only its own genes."""
    from loader.pool import GenePool  # imported here: this test alone looks inside a worker
    from loader.stages import worker_batches

    loader = make_loader(shards, "val", "eval", 8, num_workers=0)
    pool = GenePool(len(loader.index.genes))
    cfg = loader.config
    batches = worker_batches(loader.index, loader.items(0), batch_size=8, chunk_size=8,
                             window=loader.window, augment=False, rc_prob=0, max_shift=0,
                             seed=cfg.seed, epoch=0, rank=0, worker=0, pool=pool)
    first = next(batches)
    assert pool.peak == len(set(first["gene"])) == 2  # 7 val individuals a gene
    rest = list(batches)
    assert len(rest) == len(loader) - 1 and pool.peak <= 2 and len(pool) == 0


@pytest.fixture()
def broken(shards, tmp_path) -> Path:
    """A copy of the demo shards with shard-000001.tar cut inside its 6th gene's edits."""
    copy = tmp_path / "shards"
    shutil.copytree(shards, copy)
    path = copy / "shard-000001.tar"
    with tarfile.open(path) as tar:
        member = [m for m in tar.getmembers() if m.name.endswith(".var.zst")][5]
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
    """on_error = "skip": the genes of the cut shard read before the cut load, the rest become
    padding; loader.skipped names the shard."""
    loader = make_loader(broken, "train", "eval", 8, num_workers=2, on_error="skip")
    batches = list(loader)
    assert len(batches) == len(loader)
    valid = sum(int(b["valid"].sum()) for b in batches)
    train = manifest.filter(pl.col("split") == "train")
    genes = train.filter(pl.col("shard") == "shard-000001.tar")["gene"].unique(
        maintain_order=True).to_list()
    lost = train.filter(pl.col("gene") == genes[5]).height  # one gene's train samples
    assert valid == train.height - lost
    assert list(loader.skipped) == [str(broken / "shard-000001.tar")]
    assert "skipped" in caplog.text and "shard-000001.tar" in caplog.text


def test_a_corrupt_gene_json_becomes_padding_counted_in_skipped(shards, manifest, tmp_path):
    """Issue 15 item 9: a gene record whose JSON fails its checksum is an error naming shard and
    member, or with on_error = "skip" its samples become padding (valid False, all N, NaN
    targets), counted in loader.skipped, and every other gene loads."""
    copy = tmp_path / "shards"
    shutil.copytree(shards, copy)
    path = copy / "shard-000002.tar"
    with tarfile.open(path) as tar:
        member = [m for m in tar.getmembers() if m.name.endswith(".json")][3]
    data = bytearray(path.read_bytes())
    data[member.offset_data + 20] ^= 0x01  # one changed digit or letter
    path.write_bytes(bytes(data))
    with pytest.raises(ShardFormatError, match=rf"shard-000002.tar: member {member.name}.*sha256"):
        list(make_loader(copy, "val", "eval", 8, num_workers=0))
    loader = make_loader(copy, "val", "eval", 8, num_workers=2, on_error="skip")
    batches = list(loader)
    padded = [(b["seq"][i], b["Y"][i], b["gene"][i]) for b in batches
              for i in range(8) if b["index"][i] >= 0 and not b["valid"][i]]
    val = manifest.filter(pl.col("split") == "val")
    gene = member.name.split(".")[0]
    assert len(padded) == val.filter(pl.col("key").str.starts_with(gene + "__")).height > 0
    assert all((s == 4).all() and torch.isnan(y) and g == "" for s, y, g in padded)
    assert sum(int(b["valid"].sum()) for b in batches) == val.height - len(padded)
    assert list(loader.skipped) == [str(copy / "shard-000002.tar")]
    assert member.name in loader.skipped[str(copy / "shard-000002.tar")]


def test_corrupt_header_is_reported_as_missing_genes(shards, tmp_path):
    copy = tmp_path / "shards"
    shutil.copytree(shards, copy)
    path = copy / "shard-000000.tar"
    with tarfile.open(path) as tar:
        member = tar.getmembers()[6]  # the third gene's JSON
    data = bytearray(path.read_bytes())
    data[member.offset: member.offset + 100] = b"x" * 100  # tar then ends silently here
    path.write_bytes(bytes(data))
    with pytest.raises(ShardFormatError, match=r"shard-000000.tar lacks gene \S+ \(\d+ sample"):
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


def test_threads_in_the_main_process_build_the_same_batches(shards):
    """[loader] threads cuts each batch between threads (num_workers = 0): same batches."""
    def run(**kw):
        loader = make_loader(shards, "train", "pairwise", 8, num_workers=0, epoch_batches=6,
                             **kw)
        return [(b["index_a"].tolist(), b["seq_a"].numpy().tobytes(),
                 b["seq_b"].numpy().tobytes(), b["tss_index"].tolist()) for b in loader]

    assert run(threads=3) == run()
