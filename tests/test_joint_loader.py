"""loader.joint on real-format shards (prep.enformer_data and prep.mpra outputs of the chr22
fixtures of tests/test_enformer_data.py and tests/test_mpra.py): batch contents, augmentation,
DDP-exactness with 2 ranks, exact resume, and the missing-data error."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from loader.joint import (
    JointDataError,
    epoch_items,
    make_enformer_loader,
    make_mpra_loader,
    shift_codes,
)
from prep.encoding import COMPLEMENT
from prep.enformer_format import decode_enformer_sample
from prep.shard_tar import read_tar_members
from tests.test_enformer_data import built, inputs  # noqa: F401  (fixtures)
from tests.test_mpra import built as mpra_built  # noqa: F401  (fixture)
from tests.test_mpra import tables  # noqa: F401  (fixture)


def _records(workdir, organism, split) -> dict[str, dict]:
    out = {}
    for shard in sorted((workdir / "enformer_data" / organism / split).glob("shard-*.tar")):
        for raw in read_tar_members(shard):
            s = decode_enformer_sample(raw)
            out[s["__key__"]] = s
    return out


def test_epoch_items_are_disjoint_cover_everything_and_pad():
    for n, b, w in ((7, 2, 2), (12, 3, 2), (1, 4, 3), (10, 1, 4)):
        for shuffle in (False, True):
            parts = [epoch_items(n, b, r, w, 5, 3, shuffle) for r in range(w)]
            assert len({len(p) for p in parts}) == 1 and len(parts[0]) % b == 0
            real = np.concatenate([p[p >= 0] for p in parts])
            assert sorted(real.tolist()) == list(range(n))  # disjoint, union = all
    a = epoch_items(50, 4, 0, 2, 5, 3, True)
    assert np.array_equal(a, epoch_items(50, 4, 0, 2, 5, 3, True))  # pure in (seed, epoch)
    assert not np.array_equal(a, epoch_items(50, 4, 0, 2, 5, 4, True))


def test_enformer_eval_batches_hold_the_records_in_order(built):  # noqa: F811
    records = _records(built, "human", "val")
    loader = make_enformer_loader(built / "enformer_data", "human", "val", batch_size=3)
    assert len(loader) == 1 and loader.length == 4096 and loader.target_shape == (8, 6)
    (batch,) = list(loader)
    assert batch["seq"].dtype == torch.uint8 and batch["seq"].shape == (3, 4096)
    assert batch["target"].dtype == torch.float32 and batch["target"].shape == (3, 8, 6)
    assert batch["valid"].tolist() == [True, True, False]
    for row, key in enumerate(batch["key"][:2]):
        np.testing.assert_array_equal(batch["seq"][row].numpy(), records[key]["seq"])
        np.testing.assert_array_equal(batch["target"][row].numpy(),
                                      records[key]["target"].astype(np.float32))
    assert (batch["seq"][2] == 4).all() and (batch["target"][2] == 0).all()
    assert loader.epoch == 1 and loader.batch == 0


def test_enformer_train_augments_shift_and_reverse_complement(built):  # noqa: F811
    records = _records(built, "human", "train")
    loader = make_enformer_loader(built / "enformer_data", "human", "train", batch_size=7,
                                  rc_prob=0.5, max_shift=3, seed=1)
    flips = 0
    for epoch in range(3):
        batch = loader.batch_at(epoch, 0)
        for row, key in enumerate(batch["key"]):
            seq, t = batch["seq"][row].numpy(), batch["target"][row].numpy()
            orig = records[key]
            want_t = orig["target"].astype(np.float32)
            if np.array_equal(t, want_t):
                candidates = [shift_codes(orig["seq"], s) for s in range(-3, 4)]
            else:
                np.testing.assert_array_equal(t, want_t[::-1])  # bins reversed, tracks kept
                flips += 1
                candidates = [COMPLEMENT[shift_codes(orig["seq"], s)[::-1]]
                              for s in range(-3, 4)]
            assert any(np.array_equal(seq, c) for c in candidates), key
    assert 0 < flips < 21


def test_enformer_two_ranks_are_ddp_exact_and_resume(built):  # noqa: F811
    root = built / "enformer_data"
    ranks = [make_enformer_loader(root, "human", "train", batch_size=2, seed=3, rank=r,
                                  world_size=2, threads=2) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 2  # 7 records over 2 x 2 x 2 slots
    keys = [[k for b in ld for k, v in zip(b["key"], b["valid"], strict=True) if v]
            for ld in ranks]
    assert not set(keys[0]) & set(keys[1])
    assert sorted(keys[0] + keys[1]) == sorted(_records(built, "human", "train"))
    # resume mid-epoch: the same batches as the uninterrupted loader
    a = make_enformer_loader(root, "human", "train", batch_size=2, seed=3, prefetch=0)
    straight = [b["key"] for b in a] + [b["key"] for b in a]
    b = make_enformer_loader(root, "human", "train", batch_size=2, seed=3)
    first = next(iter(b))["key"]
    state = b.state_dict()
    c = make_enformer_loader(root, "human", "train", batch_size=2, seed=3)
    c.load_state_dict(state)
    rest = [x["key"] for x in c] + [x["key"] for x in c]
    assert [first] + rest == straight


def test_mpra_batches_pad_centre_and_mask(mpra_built):  # noqa: F811
    root = mpra_built / "mpra"
    loader = make_mpra_loader(root, "val", batch_size=16)
    assert loader.width == 200 and loader.cell_types == ["K562", "HepG2", "GM12878"]
    batches = list(loader)
    n = sum(int(b["valid"].sum()) for b in batches)
    assert n == loader.n_items
    b = batches[0]
    assert b["seq_ref"].shape == (16, 200) and b["effect"].shape == (16, 3)
    assert b["mask"].dtype == torch.bool and b["effect"].dtype == torch.float32
    # eval: stored order, ref and alt differ at one base (the SNP)
    diff = (b["seq_ref"] != b["seq_alt"]).sum(dim=1)
    assert (diff[b["valid"]] == 1).all()
    np.testing.assert_array_equal(b["seq_ref"][0].numpy(), loader.ref[0])
    last = batches[-1]
    assert (last["effect"][~last["valid"]] == 0).all() and not last["mask"][~last["valid"]].any()


def test_mpra_two_ranks_and_resume(mpra_built):  # noqa: F811
    root = mpra_built / "mpra"
    ranks = [make_mpra_loader(root, "train", batch_size=32, seed=2, rank=r, world_size=2)
             for r in range(2)]
    assert len(ranks[0]) == len(ranks[1])
    ids = [ranks[r].items(0) for r in range(2)]
    real = np.concatenate([i[i >= 0] for i in ids])
    assert sorted(real.tolist()) == list(range(ranks[0].n_items))
    a = make_mpra_loader(root, "train", batch_size=32, seed=2)
    straight = [b["seq_ref"] for b in a]
    b = make_mpra_loader(root, "train", batch_size=32, seed=2)
    it = iter(b)
    for _ in range(3):
        next(it)
    c = make_mpra_loader(root, "train", batch_size=32, seed=2)
    c.load_state_dict(b.state_dict())
    rest = [x["seq_ref"] for x in c]
    assert len(rest) == len(straight) - 3
    assert all(torch.equal(x, y) for x, y in zip(rest, straight[3:], strict=True))


def test_missing_data_names_the_folder_and_command(tmp_path):
    with pytest.raises(JointDataError, match="python -m prep.enformer_data"):
        make_enformer_loader(tmp_path / "enformer_data", "human", "train", batch_size=1)
    with pytest.raises(JointDataError, match="python -m prep.mpra"):
        make_mpra_loader(tmp_path / "mpra", "train", batch_size=1)
