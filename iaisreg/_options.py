"""The one table of :func:`iaisreg.iais`'s string options: allowed values,
default and a one-line description of each.

Every place that takes these options reads them from here: the core's
``iais`` and ``isda``, ``iaisreg.torch.IAISLoss``, ``iaisreg.jax.iais_jit``
and ``iaisreg.jax.IAISLoss``, ``iaisreg.tf.IAISLoss``. A function takes them
as ``**options``; :func:`resolve_options` fills in the defaults and checks the
values, and :func:`takes_options` gives the function the signature it behaves
as having (``mode='singular', anchor='V', ...``), so ``help()`` and
``inspect.signature`` show every option with its default.
"""
from __future__ import annotations

import inspect
from types import MappingProxyType
from typing import Any, Callable, Mapping, NamedTuple

from ._validate import check_option

__all__ = ["Option", "OPTIONS", "resolve_options", "takes_options"]


class Option(NamedTuple):
    """One string option: its allowed values (the default first), its default
    and what it means."""

    choices: tuple[str, ...]
    default: str
    doc: str

    def narrowed(self, default: str, *, exclude: tuple[str, ...] = ()) -> "Option":
        """The same option with another default (listed first) and without the
        values in ``exclude``."""
        rest = tuple(c for c in self.choices if c != default and c not in exclude)
        return self._replace(choices=(default,) + rest, default=default)


#: name -> :class:`Option` for every string option of :func:`iaisreg.iais`
#: (read-only). ``OPTIONS["mode"].choices`` lists the allowed modes.
OPTIONS: Mapping[str, Option] = MappingProxyType({
    "mode": Option(("singular", "distributed"), "singular",
                   "singular: argmax mirror (Eq. 10-11); distributed: P_ao @ P_oa (Eq. 12-13)"),
    "anchor": Option(("V", "L", "both"), "V",
                     "V: visual self-attention vs the mirror built from text; L: the reverse; both: their sum"),
    "variant": Option(("official", "paper"), "official",
                      "official: the authors' code; paper: the printed equations (docs/semantics.md)"),
    "heads": Option(("auto", "mean_probs", "per_head", "mean_scores"), "auto",
                    "auto: the variant's own; mean_probs: average block probabilities over heads; "
                    "per_head: loss per head, then mean; mean_scores: average scores first"),
    "reduction": Option(("mean", "sum", "none"), "mean", "over samples: mean, sum, or none -> (B,)"),
    "inputs": Option(("scores", "probs"), "scores",
                     "scores: pre-softmax Q K^T / sqrt(d); probs: attention probabilities"),
})


def resolve_options(func: str, given: Mapping[str, Any], table: Mapping[str, Option] = OPTIONS) -> dict:
    """Every option of ``table`` with its value: the one in ``given`` or the
    default. An unknown name is a ``TypeError`` worded as Python's own; a
    value outside the choices a ``ValueError`` naming the argument, the
    allowed values and what was received.

    >>> resolve_options("iais", {"mode": "distributed"})["anchor"]
    'V'
    """
    for name in given:
        if name not in table:
            raise TypeError(f"{func}() got an unexpected keyword argument {name!r}")
    values = {}
    for name, option in table.items():
        values[name] = check_option(name, given.get(name, option.default), option.choices, func=func)
    return values


def takes_options(table: Mapping[str, Option] = OPTIONS) -> Callable[[Callable], Callable]:
    """Decorator for a function (or ``__init__``) that takes the options as
    ``**options``: its ``__signature__`` gets one keyword-only parameter per
    option of ``table``, with the table's default, in place of ``**options``
    (before ``xp`` when there is one). Only what ``help()`` and
    ``inspect.signature`` show changes; the call itself is untouched."""

    def decorate(fn: Callable) -> Callable:
        params = [p for p in inspect.signature(fn).parameters.values() if p.kind is not p.VAR_KEYWORD]
        opts = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=o.default, annotation="str")
                for name, o in table.items()]
        at = next((i for i, p in enumerate(params) if p.name == "xp"), len(params))
        fn.__signature__ = inspect.Signature(params[:at] + opts + params[at:],
                                             return_annotation=inspect.signature(fn).return_annotation)
        return fn

    return decorate
