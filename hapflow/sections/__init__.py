"""Every section of a study file: one frozen dataclass each, in one package.

A study file (TOML) holds the sections of :data:`SECTIONS`; each field is one setting with its
default and a docstring line (``docs/config.md`` is generated from them). Fields marked
``metadata={"path": True}`` are paths, resolved against the study file's folder. Every
``__post_init__`` checks the values of its own section (:func:`~hapflow.sections.base.require`,
which also checks every ``Literal`` field) and raises :class:`ConfigError` only; rules that join
sections are in :func:`hapflow.config.check_study`; what a stage needs that a section may leave
unset (an input file) is checked by that stage.

* :mod:`hapflow.sections.inputs` — ``[haplotypes]``, ``[expression]``, ``[simulate]``, ``[shard]``
* :mod:`hapflow.sections.training` — ``[loader]``, ``[model]``, ``[train]``
* :mod:`hapflow.sections.evaluation` — ``[baselines]``, ``[evaluate]``, ``[attribute]``
* :mod:`hapflow.sections.joint` — ``[enformer_data]``, ``[mpra]``

Import sections from here (``from hapflow.sections import LoaderConfig``). Nothing here imports
numpy, torch or a stage.
"""

from __future__ import annotations

from hapflow.sections.base import (
    BASELINE_METHODS,
    LOSS_TERM_HEADS,
    LOSS_TERM_STREAMS,
    MAX_LENGTH,
    MPRA_CELL_TYPES,
    ORGANISMS,
    PRIMARY_TARGETS,
    STRATEGIES,
    ConfigError,
)
from hapflow.sections.evaluation import AttributeConfig, BaselinesConfig, EvaluateConfig
from hapflow.sections.inputs import (
    ExpressionConfig,
    HaplotypesConfig,
    ShardConfig,
    SimulateConfig,
    target_set_labels,
)
from hapflow.sections.joint import EnformerDataConfig, MpraConfig, mpra_cell_types
from hapflow.sections.training import LoaderConfig, ModelConfig, TrainConfig

__all__ = [
    "ConfigError",
    "HaplotypesConfig",
    "ExpressionConfig",
    "SimulateConfig",
    "ShardConfig",
    "LoaderConfig",
    "ModelConfig",
    "TrainConfig",
    "BaselinesConfig",
    "EvaluateConfig",
    "AttributeConfig",
    "EnformerDataConfig",
    "MpraConfig",
    "SECTIONS",
    "MAX_LENGTH",
    "STRATEGIES",
    "LOSS_TERM_HEADS",
    "LOSS_TERM_STREAMS",
    "BASELINE_METHODS",
    "PRIMARY_TARGETS",
    "target_set_labels",
    "mpra_cell_types",
    "ORGANISMS",
    "MPRA_CELL_TYPES",
]

SECTIONS: dict[str, type] = {
    "haplotypes": HaplotypesConfig,
    "expression": ExpressionConfig,
    "simulate": SimulateConfig,
    "shard": ShardConfig,
    "loader": LoaderConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "baselines": BaselinesConfig,
    "evaluate": EvaluateConfig,
    "attribute": AttributeConfig,
    "enformer_data": EnformerDataConfig,
    "mpra": MpraConfig,
}
"""Every section of a study file and the dataclass that reads it, in file order."""
