"""The study configuration machinery, re-exported from its home, :mod:`hapflow.config`.

Kept so that ``from prep.config import load_config, save_config, atomic_write_text, ...`` goes
on working in every stage; new code may import :mod:`hapflow.config` directly. Neither module
imports numpy or torch.
"""

from hapflow.config import (
    SECTIONS,
    TORCH_SECTIONS,
    ConfigError,
    StudyConfig,
    atomic_write_bytes,
    atomic_write_text,
    config_to_dict,
    load_config,
    load_study,
    load_toml,
    save_config,
    split_overrides,
    workdir_layout,
)

__all__ = [
    "ConfigError",
    "SECTIONS",
    "TORCH_SECTIONS",
    "StudyConfig",
    "load_study",
    "load_toml",
    "load_config",
    "split_overrides",
    "config_to_dict",
    "save_config",
    "atomic_write_bytes",
    "atomic_write_text",
    "workdir_layout",
]
