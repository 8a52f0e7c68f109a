"""iaisreg: relation-alignment regularization (IAIS) and the ISDa metric for
single-stream vision-language models, for any array-API library.

Ren et al., "Learning Relation Alignment for Calibrated Cross-modal
Retrieval", ACL-IJCNLP 2021.

The public functions take arrays positionally, options by keyword, and an
optional namespace ``xp``. :data:`OPTIONS` lists the string options of
:func:`iais` (allowed values, default, meaning).

This module imports no framework. Framework conveniences live in
:mod:`iaisreg.torch`, :mod:`iaisreg.jax` and :mod:`iaisreg.tf`.
"""
from __future__ import annotations

from ._blocks import Items, masks_from_lengths
from ._divergence import m_kl
from ._isda import IsdaResult, isda
from ._loss import iais
from ._options import OPTIONS
from .schedules import (
    SCHEDULES,
    constant_schedule,
    exp_schedule,
    get_schedule,
    linear_schedule,
    log_schedule,
)

#: the version of this package
__version__ = "0.1.0"

__all__ = [
    "iais",
    "isda",
    "m_kl",
    "masks_from_lengths",
    "exp_schedule",
    "linear_schedule",
    "log_schedule",
    "constant_schedule",
    "get_schedule",
    "SCHEDULES",
    "Items",
    "IsdaResult",
    "OPTIONS",
    "__version__",
]
