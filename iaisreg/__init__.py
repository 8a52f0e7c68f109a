"""iaisreg: relation-alignment regularization (IAIS) and the ISDa metric for
single-stream vision-language models, for any array-API library.

Ren et al., "Learning Relation Alignment for Calibrated Cross-modal
Retrieval", ACL-IJCNLP 2021.

This module imports no framework. Framework conveniences live in
:mod:`iaisreg.torch`, :mod:`iaisreg.jax` and :mod:`iaisreg.tf`.
"""
from __future__ import annotations

from ._blocks import Items, block_log_softmax, item_masks, masks_from_lengths, two_block_log_softmax
from ._divergence import m_kl
from ._isda import IsdaResult, cps, isda
from ._loss import block_probs, iais
from ._mirror import distributed_mirror, mirror_index, singular_mirror
from ._options import OPTIONS
from .schedules import (
    SCHEDULES,
    constant_schedule,
    exp_schedule,
    get_schedule,
    linear_schedule,
    log_schedule,
)

__version__ = "0.1.0"

__all__ = [
    "iais",
    "isda",
    "m_kl",
    "cps",
    "IsdaResult",
    "Items",
    "masks_from_lengths",
    "item_masks",
    "block_log_softmax",
    "two_block_log_softmax",
    "block_probs",
    "mirror_index",
    "singular_mirror",
    "distributed_mirror",
    "exp_schedule",
    "linear_schedule",
    "log_schedule",
    "constant_schedule",
    "get_schedule",
    "SCHEDULES",
    "OPTIONS",
    "__version__",
]
