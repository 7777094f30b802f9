"""train.run end to end on real demo shards: 2-process gloo torchrun, kill -9 and exact resume,
outputs, and clear errors."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT
from tests.train_demo import load_train_study, train_study, write_config


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return train_study(tmp_path_factory.mktemp("train"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    return env


def _records(run: Path, kind: str) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


@pytest.mark.slow
def test_two_process_torchrun_learns_and_writes_everything(study):
    workdir, config = study
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), "-m", "train.run",
           "--config", str(config), "--workdir", str(workdir), "--name", "ddp",
           "--set", "train.epochs=4", "--set", "train.effective_batch=16"]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = workdir / "runs" / "ddp"
    train = _records(run, "train")
    # batch 4 x 2 ranks x 2 micro-batches (DDP no_sync, then all-reduce) = effective batch 16:
    # 6 batches per epoch per rank -> 3 steps per epoch
    assert [r["step"] for r in train] == list(range(1, 13))
    losses = np.array([r["loss"] for r in train])
    assert losses[-3:].mean() < 0.8 * losses[:3].mean(), losses  # SMAPE on Y is learnable
    val = _records(run, "val")
    assert [r["step"] for r in val] == [3, 6, 9, 12] and all(r["val_genes"] == 4 for r in val)
    for name in ("config.toml", "model.safetensors", "model.json", "summary.json", "data.json",
                 "best/model.json", "best/model.safetensors", "checkpoints/latest"):
        assert (run / name).exists(), name
    assert any((run / "tensorboard").iterdir())
    assert (run / "checkpoints" / "latest").read_text().strip() == "step-0000012"
    from train.checkpoint import load_checkpoint
    from train.export import load_exported

    trainer = load_checkpoint(run / "checkpoints" / "step-0000012",
                              load_exported(run))  # weights_only; fits the exported model
    assert trainer["world_size"] == 2 and len(trainer["ranks"]) == 2
    # the two ranks' loaders drew disjoint samples, as the run saw them (same settings)
    from hapflow.config import load_study
    from loader import make_loader

    loader_cfg = load_study(config, need=("loader",)).loader
    seen = [make_loader(workdir / "shards", "train", "train", config=loader_cfg, rank=r,
                        world_size=2).items(0) for r in (0, 1)]
    assert not set(seen[0].ravel()) & set(seen[1].ravel())


@pytest.mark.slow
def test_kill_9_then_resume_gives_the_same_losses(study, tmp_path):
    workdir, _ = study
    # one worker process and dropout on: resume must restore data order and RNG exactly;
    # checkpoints every 2 steps fall mid-epoch (3 steps per epoch)
    config = write_config(workdir / "resume.toml", """
[loader]
num_workers = 1
[model]
dropout_rate = 0.2
[train]
epochs = 4
checkpoint_every_steps = 2
tensorboard = false
""")
    base = [sys.executable, "-m", "train.run", "--config", str(config), "--workdir",
            str(workdir), "--quiet"]
    full = subprocess.run(base + ["--name", "straight"], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert full.returncode == 0, full.stderr[-3000:]

    proc = subprocess.Popen(base + ["--name", "killed"], cwd=ROOT, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = workdir / "runs" / "killed" / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (ckpt / "step-0000004").exists():
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed mid-way"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (ckpt / "step-0000004").exists()
    resumed = subprocess.run(base + ["--name", "killed", "--resume"], cwd=ROOT, env=_env(),
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = _records(workdir / "runs" / "straight", "train")
    b = _records(workdir / "runs" / "killed", "train")
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, 13))
    np.testing.assert_allclose([r["loss"] for r in b], [r["loss"] for r in a], rtol=0,
                               atol=1e-6)
    va = [r["val_pearson_r"] for r in _records(workdir / "runs" / "straight", "val")]
    vb = [r["val_pearson_r"] for r in _records(workdir / "runs" / "killed", "val")]
    np.testing.assert_allclose(vb, va, atol=1e-6)
    assert len(list(ckpt.glob("step-*"))) == 3  # keep_checkpoints


def test_existing_run_needs_resume_or_a_new_name(study, tmp_path):
    from train.loop import TrainError, fine_tune

    workdir, config = study
    run = workdir / "runs" / "exists" / "checkpoints" / "step-0000001"
    run.mkdir(parents=True)
    (run / "trainer.pt").write_bytes(b"")
    (run.parent / "latest").write_text("step-0000001\n")
    with pytest.raises(TrainError, match="--resume"):
        fine_tune(load_train_study(config), workdir, name="exists")


def test_clear_errors(study, tmp_path):
    workdir, config = study
    cmd = [sys.executable, "-m", "train.run", "--config", str(config)]
    out = subprocess.run(cmd + ["--workdir", str(tmp_path)], cwd=ROOT, env=_env(),
                         capture_output=True, text=True)
    assert out.returncode == 2 and "holds no shards" in out.stderr
    assert "Traceback" not in out.stderr
    out = subprocess.run(cmd + ["--workdir", str(workdir), "--set", "train.effective_batch=6"],
                         cwd=ROOT, env=_env(), capture_output=True, text=True)
    assert out.returncode == 2 and "not a multiple of [loader] batch_size" in out.stderr
    out = subprocess.run(cmd + ["--workdir", str(workdir), "--set", "train.strategy=best"],
                         cwd=ROOT, env=_env(), capture_output=True, text=True)
    assert out.returncode == 2 and "'best' is not one of" in out.stderr
    out = subprocess.run(cmd + ["--workdir", str(workdir), "--set", "train.lr_max=1"],
                         cwd=ROOT, env=_env(), capture_output=True, text=True)
    assert out.returncode == 2 and "no such setting" in out.stderr
    out = subprocess.run(cmd + ["--workdir", str(workdir), "--set",
                                "train.strategy=pairwise_classification"],
                         cwd=ROOT, env=_env(), capture_output=True, text=True)
    assert out.returncode == 2 and "needs [model] head = 'track'" in out.stderr


@pytest.mark.parametrize("strategy,extra", [
    ("in_batch", {}),                                   # loader mode "gene"
    ("pairwise_classification", {"model": {"head": "track"}}),
    ("pairwise_regression", {"train": {"terms": "pairwise_regression=1,single=0.5"}}),
])
def test_every_strategy_trains(study, strategy, extra):
    from train.loop import fine_tune

    workdir, config = study
    overrides = {"train": {"strategy": strategy, "max_steps": 2, "tensorboard": False,
                           **extra.get("train", {})}, "model": extra.get("model", {})}
    result = fine_tune(load_train_study(config, overrides), workdir,
                       name=f"every-{strategy}-{len(extra)}")
    run = Path(result["run"])
    losses = [r["loss"] for r in _records(run, "train")]
    assert len(losses) == 2 and all(np.isfinite(losses))
    val = _records(run, "val")[-1]
    assert np.isfinite(val["val_loss"]) and val["val_genes"] == 4
