"""hapflow: personal-genome haplotypes, WebDataset shards and Enformer fine-tuning.

This small package holds what every stage shares and nothing heavy (no torch, no numpy at
import): the version, the study configuration (:mod:`hapflow.config`) and the ``hapflow``
command (:mod:`hapflow.cli`). The stages live in ``prep``, ``loader``, ``train`` and
``analysis``.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
