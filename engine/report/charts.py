"""Charts for the HTML report, rendered by matplotlib to inline SVG.

Every chart is a function of plain arrays returning an ``<svg>`` string: no
files, no fonts to fetch (text is drawn as paths), the same bytes for the same
data (fixed hash salt, no date). Colours are the Okabe–Ito palette and the
cividis colour map, both readable with colour-vision deficiencies.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np

#: Okabe–Ito: distinguishable with every common colour-vision deficiency
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    matplotlib.rcParams.update({
        "svg.hashsalt": "centile", "svg.fonttype": "path", "font.size": 9,
        "axes.spines.top": False, "axes.spines.right": False, "axes.titlesize": 10,
        "axes.titleweight": "bold", "figure.dpi": 96,
    })
    return plt


def _svg(fig) -> str:
    plt = _plt()
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def bar_chart(labels: Sequence[str], values: Sequence[float], *, title: str, xlabel: str,
              colors: Sequence[str] | None = None) -> str:
    """Horizontal bars, one per label (largest first as given)."""
    plt = _plt()
    n = len(labels)
    fig, ax = plt.subplots(figsize=(7, 0.35 * n + 1.0))
    y = np.arange(n)[::-1]
    ax.barh(y, values, color=colors or OKABE_ITO[0])
    ax.set_yticks(y, labels)
    ax.set_xlabel(xlabel)
    ax.set_title(title, loc="left")
    for yi, v in zip(y, values, strict=True):
        ax.annotate(f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.3g}", (v, yi), xytext=(3, 0),
                    textcoords="offset points", va="center", fontsize=8)
    return _svg(fig)


def heatmap(matrix: np.ndarray, row_labels: Sequence[str], col_labels: Sequence[str], *, title: str,
            xlabel: str, ylabel: str, fmt: str = "{:,.0f}", note: np.ndarray | None = None) -> str:
    """A labelled heatmap (cividis); each cell shows its value (and ``note`` below it)."""
    plt = _plt()
    m = np.asarray(matrix, dtype=float)
    fig, ax = plt.subplots(figsize=(0.75 * len(col_labels) + 1.6, 0.55 * len(row_labels) + 1.1))
    im = ax.imshow(m, cmap="cividis", aspect="auto")
    ax.set_xticks(range(len(col_labels)), col_labels)
    ax.set_yticks(range(len(row_labels)), row_labels)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, loc="left")
    finite = m[np.isfinite(m)]
    mid = (finite.min() + finite.max()) / 2 if finite.size else 0
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            if not np.isfinite(m[i, j]):
                continue
            text = fmt.format(m[i, j]) + ("" if note is None else f"\n{note[i, j]}")
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="black" if m[i, j] > mid else "white")
    fig.colorbar(im, ax=ax, shrink=0.8)
    return _svg(fig)


def histogram(values: np.ndarray, *, title: str, xlabel: str, bins: int = 40, log_x: bool = False) -> str:
    """Distribution of one numeric column (optionally on a log axis)."""
    plt = _plt()
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    fig, ax = plt.subplots(figsize=(7, 3))
    if log_x:
        v = v[v > 0]
        edges = np.geomspace(max(v.min(), 1e-6), v.max(), bins + 1) if v.size else bins
        ax.set_xscale("log")
    else:
        edges = bins
    ax.hist(v, bins=edges, color=OKABE_ITO[0], edgecolor="white", linewidth=0.4)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("customers")
    ax.set_title(title, loc="left")
    return _svg(fig)


def paired_bars(labels: Sequence[str], a: Sequence[float], b: Sequence[float], *, a_label: str,
                b_label: str, title: str, xlabel: str, ylabel: str) -> str:
    """Two bars per label (e.g. predicted vs actual)."""
    plt = _plt()
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.bar(x - 0.2, a, width=0.4, label=a_label, color=OKABE_ITO[0])
    ax.bar(x + 0.2, b, width=0.4, label=b_label, color=OKABE_ITO[1], hatch="//", edgecolor="white")
    ax.set_xticks(x, labels)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, loc="left")
    ax.legend(frameon=False)
    return _svg(fig)


def forest(labels: Sequence[str], est: Sequence[float], low: Sequence[float], high: Sequence[float], *,
           title: str, xlabel: str, flagged: Sequence[bool] | None = None) -> str:
    """A forest plot: one estimate with its interval per row; a zero line; flagged rows in
    vermillion with a diamond marker (e.g. a failed sample-ratio check)."""
    plt = _plt()
    n = len(labels)
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * n + 1.2))
    y = np.arange(n)[::-1]
    flagged = list(flagged) if flagged is not None else [False] * n
    e, lo, hi = (np.asarray(v, dtype=float) for v in (est, low, high))
    for yi, ei, li, hi_, fl in zip(y, e, lo, hi, flagged, strict=True):
        color = OKABE_ITO[3] if fl else OKABE_ITO[0]
        ax.plot([li, hi_], [yi, yi], color=color, linewidth=1.6)
        ax.plot([ei], [yi], marker="D" if fl else "o", color=color, markersize=5)
    ax.axvline(0, color="#555555", linewidth=0.8, linestyle="--")
    ax.set_yticks(y, labels)
    ax.set_xlabel(xlabel)
    ax.set_title(title, loc="left")
    return _svg(fig)
