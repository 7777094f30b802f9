"""The study configuration machinery, re-exported from its home, :mod:`hapflow.config`.

Kept so that ``from prep.config import load_config, save_config, atomic_write_text, ...`` goes
on working in every stage; new code may import :mod:`hapflow.config` directly. Neither module
imports numpy or torch.
"""

from hapflow.config import *  # noqa: F403  (exactly hapflow.config.__all__)
from hapflow.config import __all__  # noqa: F401
