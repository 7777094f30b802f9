"""A run's batch streams: one loader per stream its loss terms read, plus validation.

Every loss term reads one batch stream (:data:`train.losses.STREAMS`: a loader mode and its
settings). A run reads the strategy's stream, which defines an epoch, and one batch of every
other configured term's stream per micro-step, epoch after epoch. Validation reads the
strategy's stream on the validation individuals (its loss) and every validation sample once
(per-gene Pearson r).

Joint-data streams (``enformer_human``, ``enformer_mouse``, ``mpra``: :mod:`loader.joint`) read
``DIR/enformer_data`` and ``DIR/mpra`` with ``[train] enformer_batch_size`` /
``mpra_batch_size`` and the ``[loader]`` seed, rc_prob and max_shift; their validation loaders
read the val split once (``[train] joint_val_batches`` batches at most). Which streams a
micro-step draws is the run's :class:`loader.mix.Schedule` (``[train] mixing``); an epoch is
the micro-steps that read the strategy's stream once.

Data-loader iterators are created without touching the global torch RNG
(:func:`rng_neutral`): torch draws a base seed there, while hapflow's workers seed themselves
from (seed, epoch, rank, worker), so dropout draws do not depend on where a run was resumed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from hapflow.layout import Workdir
from hapflow.sections import LoaderConfig, TrainConfig
from loader import ShardLoader, make_loader
from loader.joint import JointDataError, make_enformer_loader, make_mpra_loader
from loader.mix import Schedule, stream_schedule
from train.distributed import Dist
from train.losses import STREAMS, TERMS, is_personal

__all__ = ["Streams", "build_streams", "stream_loader", "rng_neutral", "forever"]


@dataclass
class Streams:
    """The loaders of one run on one rank.

    Attributes
    ----------
    main : str
        The strategy's stream: its epochs are the run's epochs.
    train : dict of str to ShardLoader
        Every stream the configured terms read, the main one first, then by name.
    val : ShardLoader
        The main stream on the validation individuals (the validation loss).
    eval : ShardLoader
        Every validation sample once, in eval mode (per-gene Pearson r).
    """

    main: str
    train: dict[str, ShardLoader]
    val: ShardLoader
    eval: ShardLoader
    schedule: Schedule | None = None
    """Which streams micro-step j of an epoch draws (default: all, every micro-step)."""
    joint_val: dict = dataclasses.field(default_factory=dict)
    """{joint stream: its validation loader} (:mod:`train.joint` metrics)."""

    def __post_init__(self):
        if self.schedule is None:
            self.schedule = stream_schedule(dict.fromkeys(self.train, 1.0), "all")

    @property
    def epoch_micro_steps(self) -> int:
        """Micro-steps of one epoch: until the strategy's stream has been read once."""
        return self.schedule.micro_steps_for(self.main, len(self.train[self.main]))

    @property
    def length(self) -> int:
        """L, the window (bp) the loaders yield and the model reads."""
        return self.train[self.main].window.length

    def micro_batches(self, batches: Iterator[dict], others: dict[str, Iterator[dict]],
                      n: int, end_of_epoch: bool, start: int = 0) -> Iterator[dict[str, dict]]:
        """``n`` micro-batch groups ``{stream: batch}``, micro-steps ``start ..`` of the epoch:
        a batch of every stream the schedule draws there, the main stream's from ``batches``
        (the epoch's iterator), the others' from ``others``.

        With ``end_of_epoch``, the main stream's epoch is closed once the last group has been
        taken (the loader then stands at the next epoch, as a checkpoint must record it).
        """
        for j in range(start, start + n):
            yield {s: next(batches) if s == self.main else next(others[s])
                   for s in self.schedule(j)}
        if end_of_epoch:
            assert next(batches, None) is None, "the loader yielded more than len()"


def build_streams(shards: Path, loader_cfg: LoaderConfig, cfg: TrainConfig, d: Dist,
                  workdir: Workdir | None = None) -> Streams:
    """The train loaders of every stream ``cfg``'s terms read, the validation loaders and the
    mixing schedule (joint streams read ``workdir``'s enformer_data/ and mpra/ folders)."""
    main = TERMS[cfg.strategy].stream
    names = [main] + sorted({TERMS[t].stream for t in cfg.loss_terms} - {main})
    workdir = workdir or Workdir(Path(shards).parent)
    train = {s: stream_loader(shards, s, "train", loader_cfg, cfg, d) if is_personal(s)
             else joint_loader(workdir, s, "train", loader_cfg, cfg, d) for s in names}
    val = stream_loader(shards, main, "val", loader_cfg, cfg, d)
    every = make_loader(shards, split="val", mode="eval", config=loader_cfg, rank=d.rank,
                        world_size=d.world_size)
    joint_val = {s: joint_loader(workdir, s, "val", loader_cfg, cfg, d)
                 for s in names if not is_personal(s)}
    schedule = stream_schedule({s: cfg.stream_ratios.get(s, 1.0) for s in names}, cfg.mixing)
    return Streams(main=main, train=train, val=val, eval=every, schedule=schedule,
                   joint_val=joint_val)


def joint_loader(workdir: Workdir, stream: str, split: str, loader_cfg: LoaderConfig,
                 cfg: TrainConfig, d: Dist):
    """The :mod:`loader.joint` loader of a joint stream on one split (eval off ``train``).

    Raises
    ------
    JointDataError
        The stream's data folder is missing or lacks the split / organism (the message names
        the folder and the command that builds it).
    """
    spec = STREAMS[stream]
    common = {"seed": loader_cfg.seed, "rank": d.rank, "world_size": d.world_size,
              "rc_prob": loader_cfg.rc_prob,
              "max_batches": cfg.joint_val_batches if split != "train" else None}
    try:
        if spec["kind"] == "enformer":
            return make_enformer_loader(workdir.enformer_data, spec["organism"], split,
                                        cfg.enformer_batch_size, max_shift=loader_cfg.max_shift,
                                        **common)
        return make_mpra_loader(workdir.mpra, split, cfg.mpra_batch_size, **common)
    except JointDataError as err:
        raise JointDataError(f"[train] terms: the {stream} term needs {err}") from None


def stream_loader(shards: Path, stream: str, split: str, loader_cfg: LoaderConfig,
                  cfg: TrainConfig, d: Dist) -> ShardLoader:
    """The loader of one batch stream on one split (train mode becomes eval off ``train``)."""
    spec = STREAMS[stream]
    extra = {k: getattr(cfg, v) for k, v in spec.get("from_train", {}).items()}
    mode = spec["mode"]
    if split != "train" and mode == "train":
        mode = "eval"
    return make_loader(shards, split=split, mode=mode,
                       config=dataclasses.replace(loader_cfg, **extra), rank=d.rank,
                       world_size=d.world_size)


def rng_neutral(iterable: Iterable) -> Iterator:
    """Iterate ``iterable`` without letting the creation of its DataLoader iterator draw from
    the global torch RNG (torch draws a base seed there; hapflow's workers seed themselves from
    (seed, epoch, rank, worker)), so dropout streams do not depend on where a run resumed."""
    state = torch.get_rng_state()
    it = iter(iterable)
    try:
        first = next(it)
    except StopIteration:
        return
    finally:
        torch.set_rng_state(state)
    yield first
    yield from it


def forever(loader: Iterable) -> Iterator:
    """A secondary stream's batches, epoch after epoch."""
    while True:
        yield from rng_neutral(loader)
