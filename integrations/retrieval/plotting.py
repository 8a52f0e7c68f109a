"""Pictures of a model and of a run: object-level attention (Ren et al., ACL 2021, Fig. 7) and training curves.

:func:`draw_object_attention` draws the object-level text self-attention
``S_LL^(a)`` and image self-attention ``S_VV^(a)`` (both ``(K, K)``, one row
and one column per object) side by side, one row of panels per checkpoint
(e.g. "without IAIS" / "with IAIS"). When the two matrices of a row look
alike, the model's intra-modal relations are aligned (low ISDa).

:func:`draw_training_curves` draws the margin loss, the IAIS term,
``lambda_t`` and the validation RSUM over the steps of one or more runs, from
their JSONL logs (:func:`.logs.read_run_log`).

Each picture has a function that returns the Matplotlib figure
(:func:`object_attention_figure`, :func:`training_curves_figure`) and one
that writes it as a PNG.

Matplotlib is used through its object API with the Agg canvas: no
``pyplot``, no change of the global backend, safe in notebooks and on
headless machines.
"""
from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

import numpy as np

__all__ = ["draw_object_attention", "object_attention_figure", "draw_training_curves", "training_curves_figure",
           "CURVES"]

PathLike = Union[str, "os.PathLike[str]"]

#: Width, in characters, at which object names are wrapped on the axes.
_WRAP = 18
_COLUMN_TITLES = (r"text self-attention $S_{LL}^{(a)}$", r"image self-attention $S_{VV}^{(a)}$")


def _as_stack(x: Any, name: str) -> np.ndarray:
    """``(K, K)`` or ``(C, K, K)`` -> float64 ``(C, K, K)``."""
    if hasattr(x, "detach"):  # a torch tensor, without importing torch
        x = x.detach().cpu().float().numpy()
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1] != arr.shape[2] or arr.shape[1] == 0 or arr.shape[0] == 0:
        raise ValueError(
            f"draw_object_attention: argument {name!r} must have shape (K, K) or (C, K, K) with K >= 1; "
            f"got shape {np.shape(x)}"
        )
    if not np.isfinite(arr).all():
        raise ValueError(f"draw_object_attention: argument {name!r} must hold finite numbers")
    return arr


def _labels(names: Sequence[str], width: int, max_lines: int = 3) -> list[str]:
    """Wrap names to ``width`` characters, at most ``max_lines`` lines; number
    them (``"1: ..."``) when two wrapped labels would read the same."""

    def wrap(name: str) -> str:
        lines = textwrap.wrap(name, width) or [""]
        if len(lines) > max_lines:
            tail = " ".join(lines[max_lines - 1 :])
            lines = lines[: max_lines - 1] + [textwrap.shorten(tail, width, placeholder="...")]
        return "\n".join(lines)

    labels = [wrap(n) for n in names]
    if len(set(labels)) < len(labels):
        labels = [wrap(f"{i + 1}: {n}") for i, n in enumerate(names)]
    return labels


def draw_object_attention(
    text_matrix: Any,
    image_matrix: Any,
    object_names: Sequence[str],
    *,
    titles: str | Sequence[str] | None = None,
    path: PathLike,
    vmin: float | None = None,
    vmax: float | None = None,
    annotate: bool | None = None,
    cmap: str = "viridis",
    suptitle: str | None = None,
    dpi: int = 150,
) -> Path:
    """Draw object-level text and image self-attention heatmaps to a PNG.

    Args:
      text_matrix: ``(K, K)`` or ``(C, K, K)``; entry ``(k, l)`` is the
        attention object ``k``'s tokens put on object ``l``'s tokens (e.g.
        the ISDa object-level matrix ``S_LL^(a)``), one ``(K, K)`` per
        checkpoint.
      image_matrix: same shape, the image side ``S_VV^(a)``.
      object_names: ``K`` labels (e.g. ``ObjectGroups.names``), written on
        both axes of every panel; long names are wrapped (at most 3 lines),
        and numbered when two labels would otherwise read the same.
      titles: one title per checkpoint (``C`` strings, or one string when
        ``C == 1``), shown at the left of each row, e.g.
        ``["without IAIS", "with IAIS"]``.
      path: where to write the PNG (parent folders are created).
      vmin, vmax: colour range; by default ``[min(0, data min), data max]``
        over all panels, so panels and checkpoints are comparable. One colour
        bar serves the whole figure.
      annotate: write each value in its cell; by default when ``K <= 8``.
      cmap: a Matplotlib colour map name.
      suptitle: optional title over the whole figure.
      dpi: resolution of the PNG.

    Returns:
      ``path`` as a :class:`pathlib.Path`.

    Example::

        draw_object_attention(np.stack([t0, t1]), np.stack([i0, i1]), groups.names,
                              titles=["without IAIS", "with IAIS"], path="fig7.png")
    """
    if path is None:
        raise ValueError("draw_object_attention: argument 'path' is required")
    fig = object_attention_figure(text_matrix, image_matrix, object_names, titles=titles, vmin=vmin, vmax=vmax,
                                  annotate=annotate, cmap=cmap, suptitle=suptitle)
    return save_png(fig, path, dpi)


def object_attention_figure(
    text_matrix: Any,
    image_matrix: Any,
    object_names: Sequence[str],
    *,
    titles: str | Sequence[str] | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    annotate: bool | None = None,
    cmap: str = "viridis",
    suptitle: str | None = None,
) -> Any:
    """The Matplotlib figure of :func:`draw_object_attention` (same arguments, no ``path`` or ``dpi``):
    ``C`` rows of two panels, text self-attention left, image self-attention right."""
    from matplotlib.figure import Figure

    text, image, names, row_titles = _checked_arguments(text_matrix, image_matrix, object_names, titles)
    n_rows, k = text.shape[0], text.shape[1]
    lo, hi = _colour_range(text, image, vmin, vmax)
    if annotate is None:
        annotate = k <= 8

    fig = Figure(figsize=_figure_size(n_rows, k, with_titles=titles is not None), layout="constrained")
    axes = fig.subplots(n_rows, 2, squeeze=False)
    labels = _labels(names, _WRAP)
    fontsize = 8 if k <= 12 else 6
    image_artist = None
    for r in range(n_rows):
        for c, data in enumerate((text[r], image[r])):
            ax = axes[r, c]
            image_artist = ax.imshow(data, cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest", aspect="equal")
            column_title = _COLUMN_TITLES[c] if r == 0 else None
            _label_axes(ax, labels, fontsize, column_title=column_title, first_column=c == 0, row_title=row_titles[r])
            if annotate:
                _annotate_cells(ax, data, image_artist, fontsize - 1)
    fig.colorbar(image_artist, ax=axes.ravel().tolist(), shrink=0.8, label="attention")
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def save_png(fig: Any, path: PathLike, dpi: int) -> Path:
    """Write ``fig`` as a PNG at ``path`` (parent folders are created) through the Agg canvas; returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    out = Path(path)
    FigureCanvasAgg(fig)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=dpi)
    return out


def _checked_arguments(
    text_matrix: Any,
    image_matrix: Any,
    object_names: Sequence[str],
    titles: str | Sequence[str] | None,
) -> tuple[np.ndarray, np.ndarray, list[str], list[str | None]]:
    """Check :func:`draw_object_attention`'s data arguments.

    Returns ``(text, image, names, row_titles)``: both matrices as
    ``(C, K, K)`` float64, the ``K`` names and ``C`` row titles (``None``
    entries without ``titles``) as ``str``.
    """
    func = "draw_object_attention"
    text = _as_stack(text_matrix, "text_matrix")
    image = _as_stack(image_matrix, "image_matrix")
    if text.shape != image.shape:
        raise ValueError(
            f"{func}: arguments 'text_matrix' and 'image_matrix' must have the same shape; "
            f"got {text.shape} and {image.shape} (as (C, K, K))"
        )
    n_rows, k = text.shape[0], text.shape[1]
    if isinstance(object_names, str) or len(object_names) != k:
        got = "a str" if isinstance(object_names, str) else f"{len(object_names)} names"
        raise ValueError(f"{func}: argument 'object_names' must hold K={k} names (one per matrix row); got {got}")
    names = [str(n) for n in object_names]
    if titles is None:
        row_titles: list[str | None] = [None] * n_rows
    else:
        row_titles = [titles] if isinstance(titles, str) else [str(t) for t in titles]
        if len(row_titles) != n_rows:
            raise ValueError(
                f"{func}: argument 'titles' must hold one title per checkpoint (C={n_rows}); got {len(row_titles)}"
            )
    return text, image, names, row_titles


def _colour_range(text: np.ndarray, image: np.ndarray, vmin: float | None, vmax: float | None) -> tuple[float, float]:
    """``(lo, hi)``: ``vmin``/``vmax`` where given, else ``min(0, data min)`` and
    the data max over both stacks; an empty range is widened to ``(lo, lo + 1)``."""
    lo = min(0.0, float(min(text.min(), image.min()))) if vmin is None else float(vmin)
    hi = float(max(text.max(), image.max())) if vmax is None else float(vmax)
    if not hi > lo:
        hi = lo + 1.0
    return lo, hi


def _figure_size(n_rows: int, k: int, *, with_titles: bool) -> tuple[float, float]:
    """``(width, height)`` in inches of ``n_rows`` rows of two square ``K x K``
    panels, with room for labels wrapped at ``_WRAP`` characters, the colour
    bar, and (``with_titles``) the checkpoint names at the left."""
    cell = 0.55 if k <= 12 else 0.35
    label_room = 0.09 * _WRAP + 0.45
    panel = max(2.2, cell * k)
    return (2 * (panel + label_room) + 1.2 + (0.4 if with_titles else 0), n_rows * (panel + label_room) + 0.6)


def _label_axes(
    ax: Any,
    labels: Sequence[str],
    fontsize: int,
    *,
    column_title: str | None,
    first_column: bool,
    row_title: str | None,
) -> None:
    """Write the object names on both axes of a panel and name the axes.

    ``column_title`` (given for the top row) goes above the panel; in the
    first column the y axis reads "attending object", preceded by
    ``row_title`` in bold when there is one.
    """
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", rotation_mode="anchor", fontsize=fontsize)
    ax.set_yticks(range(len(labels)), labels, fontsize=fontsize)
    ax.set_xlabel("attended object", fontsize=fontsize + 1)
    if column_title is not None:
        ax.set_title(column_title, fontsize=fontsize + 2)
    if first_column:
        ylabel = "attending object"
        if row_title:
            ylabel = f"{row_title}\n\n{ylabel}"
        ax.set_ylabel(ylabel, fontsize=fontsize + 1)
        if row_title:
            # make the checkpoint name stand out from the axis label
            ax.yaxis.label.set_fontweight("bold")


def _annotate_cells(ax: Any, data: np.ndarray, image_artist: Any, fontsize: int) -> None:
    """Write each value of ``data`` in its cell, black on light colours and
    white on dark ones (as ``image_artist`` coloured them)."""
    cmap_obj = image_artist.cmap
    norm = image_artist.norm
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            rgb = cmap_obj(norm(data[i, j]))[:3]
            light = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] > 0.5
            color = "black" if light else "white"
            ax.text(j, i, f"{data[i, j]:.2f}", ha="center", va="center", fontsize=fontsize, color=color)


# ------------------------------------------------------------------ training curves

#: the panels of the training curves: ``(title, record key, log, noisy)``; ``log`` is ``"steps"``
#: (``train_log.jsonl``) or ``"evaluations"`` (the val records of ``valid_log.jsonl``); a long ``noisy`` series
#: gets its running mean drawn on top
CURVES = (("margin loss", "rank_loss", "steps", True), ("IAIS term", "iais_loss", "steps", True),
          ("lambda_t (IAIS weight)", "lambda", "steps", False), ("validation RSUM", "rsum", "evaluations", False))


def _series(records: Any, key: str, log: str) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, values)`` of ``key`` in one run's records (a :class:`.logs.RunRecords`), finite values only."""
    rows = records.steps if log == "steps" else [r for r in records.evaluations if r.get("split") == "val"]
    pairs = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float)) and np.isfinite(r[key])]
    steps, values = (np.asarray(v, dtype=np.float64) for v in zip(*pairs)) if pairs else (np.zeros(0), np.zeros(0))
    return steps, values


def _plot_series(ax: Any, steps: np.ndarray, values: np.ndarray, label: str, color: str, noisy: bool) -> None:
    """A run's line; a long noisy series is drawn faintly with its running mean on top."""
    if len(values) < 20 or not noisy:
        ax.plot(steps, values, "o-" if len(values) < 12 else "-", color=color, label=label, markersize=3)
        return
    window = max(2, len(values) // 25)
    mean = np.convolve(values, np.ones(window) / window, mode="valid")
    ax.plot(steps, values, color=color, alpha=0.25, linewidth=0.8)
    ax.plot(steps[window - 1:], mean, color=color, label=f"{label} (mean of {window})")


def training_curves_figure(runs: Mapping[str, Any]) -> Any:
    """The Matplotlib figure of :func:`draw_training_curves`: one panel per entry of :data:`CURVES`, one line per
    run. ``runs`` maps a label to the run's :class:`.logs.RunRecords`."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 6.5), layout="constrained")
    axes = fig.subplots(2, 2).ravel()
    for ax, (title, key, log, noisy) in zip(axes, CURVES):
        for i, (label, records) in enumerate(runs.items()):
            steps, values = _series(records, key, log)
            lam = _series(records, "lambda", "steps")[1]
            if key in ("iais_loss", "lambda") and len(lam) and not lam.any():
                ax.plot([], [], " ", label=f"{label}: IAIS off")  # lambda_t = 0 throughout: no IAIS term
            elif len(values):
                _plot_series(ax, steps, values, label, f"C{i}", noisy)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[1]:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no records", ha="center", va="center", transform=ax.transAxes, color="grey")
    return fig


def draw_training_curves(runs: Mapping[str, Any], *, path: PathLike, dpi: int = 120) -> Path:
    """Draw the margin loss, the IAIS term, ``lambda_t`` and the validation RSUM over the steps of each run.

    Args:
      runs: label -> the run's records, as :func:`.logs.read_run_log` returns them.
      path: where to write the PNG (parent folders are created).
      dpi: resolution of the PNG.

    Returns:
      ``path`` as a :class:`pathlib.Path`.

    Example::

        draw_training_curves({"no IAIS": read_run_log("runs/a"), "IAIS": read_run_log("runs/b")},
                             path="curves.png")
    """
    return save_png(training_curves_figure(runs), path, dpi)
