"""Joint training (issue 16) on CPU with a tiny random model (dim 48, depth 1): personal pairs
of the real chr22 demo, Enformer records at 196,608 bp (batch 1) and MPRA pairs. Every term is
finite and reaches its head and the trunk; a run killed with kill -9 resumes with the same
per-step losses; missing data and bad settings are clear errors."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from hapflow.sections import ConfigError, TrainConfig
from tests.conftest import ROOT
from tests.joint_data import joint_study
from tests.test_train_run import _env, _records
from tests.train_demo import load_train_study, write_config

TERMS = {"pairwise_regression": 1.0, "enformer_human": 0.5, "enformer_mouse": 0.5, "mpra": 0.1}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return joint_study(tmp_path_factory.mktemp("joint"))


def _study(config, **train):
    return load_train_study(config, {"train": {"terms": TERMS, **train}})


def test_each_term_is_finite_and_reaches_its_head_and_the_trunk(study):
    from hapflow.layout import Workdir
    from train.data import build_streams
    from train.distributed import Dist
    from train.joint import joint_heads
    from train.loop import step_loss
    from train.model import build_model

    workdir, config = study
    s = _study(config)
    d = Dist(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    streams = build_streams(workdir / "shards", s.loader, s.train, d, Workdir(workdir))
    assert list(streams.train) == ["pairs", "enformer_human", "enformer_mouse", "mpra"]
    heads = joint_heads(streams)
    assert heads == {"organisms": ("human", "mouse"), "mpra": (3, 200)}
    torch.manual_seed(0)
    model = build_model(s.model, streams.length, **heads)
    own = {"pairwise_regression": model.head, "enformer_human": model.track_heads["human"],
           "enformer_mouse": model.track_heads["mouse"], "mpra": model.mpra_head}
    for term, stream in (("pairwise_regression", "pairs"), ("enformer_human", "enformer_human"),
                         ("enformer_mouse", "enformer_mouse"), ("mpra", "mpra")):
        cfg = dataclasses.replace(s.train, terms={"pairwise_regression": 0.0, term: 1.0})
        batch = next(iter(streams.train[stream]))
        model.zero_grad(set_to_none=False)
        loss, parts = step_loss(model, {stream: batch}, cfg, d.device)
        assert set(parts) == {term} and torch.isfinite(loss), (term, parts)
        loss.backward()
        for name, head in own.items():
            grad = sum(float(p.grad.abs().sum()) for p in head.parameters())
            assert (grad > 0) == (name == term), (term, name, grad)
        assert float(model.stem[0].weight.grad.abs().sum()) > 0, term  # the trunk learns
    out = model(None, None, tracks={"human": torch.zeros(1, 196_608, 4)})
    assert out["tracks"]["human"].shape == (1, 896, 5) and (out["tracks"]["human"] >= 0).all()


def _run(base, name, extra=(), wait_for=None):
    cmd = base + ["--name", name, *extra]
    if wait_for is None:
        proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not wait_for.exists():
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed mid-way"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return proc


def test_kill_9_then_resume_gives_the_same_joint_losses(study):
    workdir, config = study
    # ratio mixing (pairs 2 : enformer 1 : mpra 1), dropout on, a checkpoint mid-epoch
    config = write_config(workdir / "joint_resume.toml", """
[loader]
num_workers = 0
[model]
output_heads_human = 5
dropout_rate = 0.2
[train]
strategy = "pairwise_regression"
joint_val_batches = 1
mpra_batch_size = 16
terms = { pairwise_regression = 1.0, enformer_human = 0.5, mpra = 0.1 }
mixing = "ratio"
stream_ratios = { pairs = 2 }
max_steps = 4
checkpoint_every_steps = 2
tensorboard = false
""")
    base = [sys.executable, "-m", "train.run", "--config", str(config), "--workdir",
            str(workdir), "--quiet"]
    _run(base, "straight")
    ckpt = workdir / "runs" / "killed" / "checkpoints"
    _run(base, "killed", wait_for=ckpt / "step-0000002" / "trainer.pt")
    assert (ckpt / "step-0000002").exists() and not (ckpt / "step-0000004").exists()
    _run(base, "killed", ["--resume"])
    a = _records(workdir / "runs" / "straight", "train")
    b = _records(workdir / "runs" / "killed", "train")
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2, 3, 4]
    for key in ("loss", "loss_pairwise_regression", "loss_enformer_human", "loss_mpra"):
        # a term is logged from the first step that drew its stream on (its last value)
        values = [r.get(key, np.nan) for r in a]
        assert np.isfinite(values[1:]).all(), (key, values)
        np.testing.assert_allclose([r.get(key, np.nan) for r in b], values, rtol=0,
                                   atol=1e-6, err_msg=key)
    (va,) = _records(workdir / "runs" / "straight", "val")
    (vb,) = _records(workdir / "runs" / "killed", "val")
    for key in ("val_pearson_r", "val_enformer_human_r", "val_mpra_r", "val_mpra_r_K562"):
        assert key in va and abs(va[key] - vb[key]) < 1e-6, key
    summary = json.loads((workdir / "runs" / "straight" / "summary.json").read_text())
    assert "val_enformer_human_r" in summary["final"]
    from train.export import load_exported

    model = load_exported(workdir / "runs" / "straight")  # expression only: no joint heads
    assert len(model.track_heads) == 0 and model.mpra_head is None


def test_two_process_torchrun_joint_run_with_streams_taking_turns(study):
    """DDP (gloo, 2 processes) with round-robin mixing: each step draws one stream, so the other
    heads get no gradient from their loss that step; the run must neither hang nor fail, and
    every rank logs the same steps."""
    from tests.test_train_run import _free_port

    workdir, _ = study
    config = write_config(workdir / "joint_ddp.toml", """
[loader]
num_workers = 0
[model]
output_heads_human = 5
[train]
strategy = "pairwise_regression"
joint_val_batches = 1
mpra_batch_size = 8
terms = { pairwise_regression = 1.0, enformer_human = 0.5, mpra = 0.1 }
mixing = "round_robin"
effective_batch = 8
max_steps = 3
tensorboard = false
""")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), "-m", "train.run",
           "--config", str(config), "--workdir", str(workdir), "--name", "joint_ddp", "--quiet"]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = _records(workdir / "runs" / "joint_ddp", "train")
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all(np.isfinite(r["loss"]) for r in records)
    (val,) = _records(workdir / "runs" / "joint_ddp", "val")
    assert np.isfinite(val["val_enformer_human_r"]) and np.isfinite(val["val_mpra_r"])


def test_missing_joint_data_names_the_folder_and_the_command(study, tmp_path):
    from loader.joint import JointDataError
    from train.loop import fine_tune

    workdir, config = study
    (tmp_path / "shards").symlink_to(workdir / "shards")
    with pytest.raises(JointDataError, match=r"enformer_human term needs .*enformer_data.*"
                                             r"python -m prep.enformer_data"):
        fine_tune(_study(config), tmp_path, name="nodata")


def test_mixing_settings_are_checked():
    cfg = TrainConfig(terms=TERMS, mixing="ratio", stream_ratios={"pairs": 4, "mpra": 1})
    assert cfg.loss_terms == TERMS
    with pytest.raises(ConfigError, match="stream_ratios names stream.*enformer_human"):
        TrainConfig(terms={"pairwise_regression": 1.0}, stream_ratios={"enformer_human": 1})
    with pytest.raises(ConfigError, match="stream_ratios must be > 0"):
        TrainConfig(terms=TERMS, stream_ratios={"mpra": 0})
    with pytest.raises(ConfigError, match="mixing"):
        TrainConfig(terms=TERMS, mixing="random")
