"""PyTorch adapter: :func:`iais`, :func:`isda`, :func:`m_kl` on ``torch.Tensor``
with autograd, an :class:`IAISLoss` module holding the options and the
``lambda_t`` schedule, and :class:`ScoreCapture` to read a Hugging Face
BERT-style layer's pre-softmax attention scores without patching the model.

All math lives in the backend-neutral core; this module only checks types,
picks the namespace and adds conveniences. Everything runs under
``torch.compile(fullgraph=True)``, ``dynamic=True`` included (one graph for
every batch size and sequence length), and on CUDA without host
synchronisation. Under ``torch.autocast`` the functions run with autocast
off: the core computes 16-bit inputs in float32 itself, and the loss comes
back in float32. :class:`IAISLoss` and :class:`ScoreCapture` pickle and
deep-copy with the model that holds them.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
from array_api_compat import torch as _xp

import iaisreg as _core
from iaisreg._ops import native as _native
from iaisreg._options import resolve_options as _resolve_options
from iaisreg._options import takes_options as _takes_options
from iaisreg.schedules import as_schedule as _as_schedule

__all__ = ["iais", "isda", "m_kl", "masks_from_lengths", "IAISLoss", "ScoreCapture", "xp"]

#: the array namespace the core runs on for ``torch.Tensor`` (``array_api_compat.torch``)
xp = _xp
_native("softmax", xp=_xp)  # fill the registry's cache now, not inside a first compiled call (a recompile)


def _check_tensor(x: Any, name: str, func: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{func}: argument {name!r} must be a torch.Tensor; got {type(x).__name__}")


def _autocast_off(x: torch.Tensor) -> Any:
    """Autocast off for the core's math (it upcasts 16-bit inputs itself)."""
    return torch.autocast(x.device.type, enabled=False)


def iais(attn: torch.Tensor, n_text: Any = None, **kwargs: Any) -> torch.Tensor:
    """:func:`iaisreg.iais` for ``torch.Tensor`` (same arguments).

    >>> import torch, iaisreg.torch
    >>> s = torch.randn(2, 12, 10, 10, requires_grad=True)
    >>> loss = iaisreg.torch.iais(s, 4, mode="singular")
    >>> loss.backward(); s.grad.shape
    torch.Size([2, 12, 10, 10])
    """
    _check_tensor(attn, "attn", "iais")
    with _autocast_off(attn):
        return _core.iais(attn, n_text, xp=_xp, **kwargs)


def isda(scores: torch.Tensor, text_groups: Any, image_groups: Any, n_text: Any = None, **kwargs: Any) -> Any:
    """:func:`iaisreg.isda` for ``torch.Tensor`` (same arguments)."""
    _check_tensor(scores, "scores", "isda")
    with _autocast_off(scores):
        return _core.isda(scores, text_groups, image_groups, n_text, xp=_xp, **kwargs)


def m_kl(a: torch.Tensor, b: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    """:func:`iaisreg.m_kl` for ``torch.Tensor``."""
    _check_tensor(a, "a", "m_kl")
    _check_tensor(b, "b", "m_kl")
    with _autocast_off(a):
        return _core.m_kl(a, b, xp=_xp, **kwargs)


def masks_from_lengths(n: int, text_lengths: Any, image_lengths: Any, **kwargs: Any) -> _core.Items:
    """:func:`iaisreg.masks_from_lengths` for ``torch.Tensor`` lengths."""
    return _core.masks_from_lengths(n, text_lengths, image_lengths, xp=_xp, **kwargs)


class IAISLoss(torch.nn.Module):
    """IAIS as a module: holds the options and the ``lambda_t`` schedule.

    ``forward(attn, n_text=None, *, step=None, **masks)`` returns
    ``lambda_t(step) * iais(attn, ...)`` (``lambda_t = 1`` when no schedule or
    no step is given).

    Args:
        schedule: ``None``, a name (``"exp"``, ``"linear"``, ``"log"``,
            ``"constant"``; held as a :class:`iaisreg.schedules.Schedule`)
            or any callable ``step -> weight``.
        total_steps, gamma: for named schedules.
        mode, anchor, variant, heads, reduction, inputs: as :func:`iaisreg.iais`
            (defaults from :data:`iaisreg.OPTIONS`).

    >>> import torch
    >>> crit = IAISLoss(mode="distributed", schedule="exp", total_steps=100)
    >>> s = torch.randn(2, 4, 8, 8)
    >>> bool(crit(s, 3, step=100) == iais(s, 3, mode="distributed"))
    True
    >>> crit
    IAISLoss(mode='distributed', anchor='V', variant='official', heads='auto', reduction='mean', inputs='scores', schedule=ExpSchedule(total_steps=100, gamma=5.0))
    """

    @_takes_options()
    def __init__(
        self,
        *,
        schedule: str | Callable[[Any], Any] | None = None,
        total_steps: int | None = None,
        gamma: float = 5.0,
        **options: str,
    ) -> None:
        super().__init__()
        self.options = _resolve_options("IAISLoss", options)
        self.schedule = _as_schedule(schedule, total_steps, gamma=gamma, func="IAISLoss")

    def weight(self, step: Any) -> Any:
        """``lambda_t`` at ``step`` (1.0 without a schedule)."""
        if self.schedule is None or step is None:
            return 1.0
        return self.schedule(step)

    def forward(self, attn: torch.Tensor, n_text: Any = None, *, step: Any = None, **kwargs: Any) -> torch.Tensor:
        opts = {**self.options, **kwargs}
        loss = iais(attn, n_text, **opts)
        w = self.weight(step)
        return loss if (isinstance(w, float) and w == 1.0) else loss * w

    def extra_repr(self) -> str:
        shown = {**self.options, **({} if self.schedule is None else {"schedule": self.schedule})}
        return ", ".join(f"{k}={v!r}" for k, v in shown.items())


def _find_self_attention(model: torch.nn.Module, layer: int) -> torch.nn.Module:
    candidates = [m for m in model.modules() if all(hasattr(m, a) for a in ("query", "key")) and
                  isinstance(getattr(m, "query"), torch.nn.Linear) and isinstance(getattr(m, "key"), torch.nn.Linear)]
    if not candidates:
        raise ValueError("ScoreCapture: found no self-attention module with 'query' and 'key' linear layers "
                         "(a Hugging Face BERT-style encoder was expected)")
    try:
        return candidates[layer]
    except IndexError:
        raise ValueError(f"ScoreCapture: argument 'layer' must index one of the {len(candidates)} attention layers; "
                         f"got {layer}") from None


class ScoreCapture:
    """Capture the pre-softmax attention scores ``Q K^T / sqrt(d_head)`` of one
    self-attention layer of a Hugging Face BERT-style encoder (modules with
    ``query``/``key`` linears, e.g. ``BertSelfAttention``).

    A forward pre-hook recomputes the scores from the layer's input, with
    autograd, so an IAIS loss on them trains the layer's query/key weights.
    Works with any attention implementation (eager, sdpa, flash), since it
    does not rely on ``output_attentions``.

    >>> import torch, transformers
    >>> cfg = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
    ...                               intermediate_size=64, vocab_size=100)
    >>> model = transformers.BertModel(cfg)
    >>> with ScoreCapture(model, layer=-1) as cap:
    ...     _ = model(torch.randint(0, 100, (2, 9)))
    >>> cap.scores.shape
    torch.Size([2, 4, 9, 9])
    """

    def __init__(self, model: torch.nn.Module, layer: int = -1, *, module: torch.nn.Module | None = None) -> None:
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"ScoreCapture: argument 'model' must be a torch.nn.Module; got {type(model).__name__}")
        if isinstance(layer, bool) or not isinstance(layer, int):
            raise TypeError(f"ScoreCapture: argument 'layer' must be an int; got {type(layer).__name__}")
        self.module = module if module is not None else _find_self_attention(model, layer)
        heads = getattr(self.module, "num_attention_heads", None)
        if heads is None:
            cfg = getattr(self.module, "config", None)
            heads = getattr(cfg, "num_attention_heads", None)
        if heads is None:
            raise ValueError("ScoreCapture: the attention module does not say its number of heads "
                             "('num_attention_heads')")
        self.num_heads = int(heads)
        self.scores: torch.Tensor | None = None
        self._handle = self.module.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        hidden = args[0] if args else kwargs.get("hidden_states")
        if hidden is None:
            raise ValueError("ScoreCapture: the attention layer was called without 'hidden_states'")
        b, n, _ = hidden.shape
        q = module.query(hidden).view(b, n, self.num_heads, -1).transpose(1, 2)
        k = module.key(hidden).view(b, n, self.num_heads, -1).transpose(1, 2)
        self.scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1])

    def remove(self) -> None:
        """Remove the hook."""
        self._handle.remove()

    def __getstate__(self) -> dict:
        # the captured scores belong to one forward pass (and are not a leaf
        # tensor, which neither pickles nor deep-copies): a copy starts empty
        return {**self.__dict__, "scores": None}

    def __repr__(self) -> str:
        return f"ScoreCapture(module={type(self.module).__name__}, num_heads={self.num_heads})"

    def __enter__(self) -> "ScoreCapture":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()
