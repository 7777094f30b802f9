"""train.run end to end on real demo shards: 2-process gloo torchrun, kill -9 and exact resume,
outputs, and clear errors."""

from __future__ import annotations

import json
import logging
import os
import re
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


def test_resume_needs_a_run_with_a_checkpoint(study):
    """A misspelt run name lists the runs; a run without checkpoint is not silently started
    afresh."""
    from train.loop import fine_tune
    from train.resume import ResumeError
    from train.runs import RunError

    workdir, config = study
    (workdir / "runs" / "pairwise_regression").mkdir(parents=True, exist_ok=True)
    with pytest.raises(RunError, match=r"no run 'pairwise_regresion' .*did you mean "
                                       r"'pairwise_regression'.*pairwise_regression \(no "
                                       r"checkpoint\)"):
        fine_tune(load_train_study(config), workdir, name="pairwise_regresion", resume=True)
    assert not (workdir / "runs" / "pairwise_regresion").exists()
    with pytest.raises(ResumeError, match="has no checkpoint to resume from"):
        fine_tune(load_train_study(config), workdir, name="pairwise_regression", resume=True)


def test_resume_refuses_changed_settings_unless_a_schedule_change_is_allowed(study, caplog):
    from train.loop import fine_tune
    from train.resume import ResumeError

    workdir, config = study
    first = {"train": {"max_steps": 2, "tensorboard": False}}
    fine_tune(load_train_study(config, first), workdir, name="changed")

    def resume(extra: dict, allow: bool = False):
        overrides = {s: {**first.get(s, {}), **extra.get(s, {})} for s in
                     ("train", "loader", "model")}
        return fine_tune(load_train_study(config, overrides), workdir, name="changed",
                         resume=True, allow_schedule_change=allow)

    with pytest.raises(ResumeError, match=r"the schedule: \[train\] max_steps 2 -> 3.*"
                                          r"--allow-schedule-change"):
        resume({"train": {"max_steps": 3}})
    with pytest.raises(ResumeError, match=r"the data: \[loader\] batch_size 4 -> 2") as err:
        resume({"loader": {"batch_size": 2}, "train": {"max_steps": 3}}, allow=True)
    assert "allow-schedule-change" not in str(err.value)  # only schedule changes may be allowed
    with pytest.raises(ResumeError, match=r"the model: \[model\] depth 1 -> 2"):
        resume({"model": {"depth": 2}})
    with pytest.raises(ResumeError, match=r"optimiser or validation: \[train\] "
                                          r"strategy \"single\" -> \"in_batch\""):
        resume({"train": {"strategy": "in_batch"}})
    assert resume({"train": {"patience": 9}})["steps"] == 2  # how it runs may change

    caplog.set_level(logging.INFO)
    result = resume({"train": {"max_steps": 3, "lr": 1e-3, "min_lr_ratio": 0.5}}, allow=True)
    assert result["steps"] == 3
    assert "recomputed: steps in all 2 -> 3" in caplog.text
    step3 = _records(workdir / "runs" / "changed", "train")[-1]
    assert step3["step"] == 3 and step3["lr"] == pytest.approx(1e-3 * 0.5)  # the new schedule

    run = workdir / "runs" / "changed"
    log_lines = (run / "train.log").read_text().splitlines()
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [A-Z]+ ", ln) for ln in log_lines)
    text = "\n".join(log_lines)
    assert text.count("Starting run") == 1 and text.count("Resuming (step-0000002)") >= 2
    assert "step 1/2" in text and "step 3/3" in text and "validating: " in text
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["samples"] == 3 * 8
    assert summary["wall_seconds"] > summary["val_seconds"] > 0 and summary["samples_per_s"] > 0
    assert np.isfinite(summary["final"]["train_loss"])
    assert summary["final"]["val_genes"] == 4 and "val_pearson_r" in summary["final"]
    assert summary["best"]["step"] == summary["best_step"]
    assert summary["best_val_pearson_r"] == summary["best"]["val_pearson_r"]


def test_eta_counts_the_validations_left(tmp_path):
    from train.metrics import MetricsLog, validations_left

    assert validations_left(5, 10, 2, 0) == 3  # steps 6, 8, 10
    assert validations_left(5, 11, 2, 0) == 4  # 6, 8, 10 and the last
    assert validations_left(3, 9, 0, 3) == 2  # every epoch of 3 steps
    assert validations_left(9, 9, 0, 3) == 0
    log = MetricsLog(tmp_path, total_steps=10, start_step=0, enabled=False, val_every=2)
    log.t0 = time.monotonic() - 100.0
    log.val_times = [10.0, 20.0]  # 30 s of the 100 s validating: 70 s for 5 steps
    assert log.eta(5) == pytest.approx(14.0 * 5 + 15.0 * 3, abs=0.5)
