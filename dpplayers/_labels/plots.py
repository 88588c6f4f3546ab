"""Matplotlib figures for sensitivity results (matplotlib is an optional extra)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from .optional import require

FloatArray = npt.NDArray[np.float64]


def _axes(ax: Any) -> Any:
    plt = require("matplotlib.pyplot")
    return ax if ax is not None else plt.subplots()[1]


def heatmap(matrix: FloatArray, rows: Sequence[str], cols: Sequence[str], ax: Any = None) -> Any:
    """A diverging heatmap centred at 0, labelled when small enough to read."""
    ax = _axes(ax)
    scale = float(np.abs(matrix).max()) or 1.0
    image = ax.imshow(matrix, cmap="RdBu_r", vmin=-scale, vmax=scale, aspect="auto")
    ax.figure.colorbar(image, ax=ax)
    if len(rows) <= 40:
        ax.set_yticks(range(len(rows)), rows)
    if len(cols) <= 40:
        ax.set_xticks(range(len(cols)), cols, rotation=90)
    return ax


def tornado(names: Sequence[str], values: FloatArray, ax: Any = None) -> Any:
    """Horizontal bars, largest magnitude on top, coloured by sign."""
    ax = _axes(ax)
    at = np.arange(len(names))[::-1]
    ax.barh(at, values, color=np.where(values >= 0, "tab:red", "tab:blue"))
    ax.set_yticks(at, names)
    ax.axvline(0.0, color="k", linewidth=0.8)
    ax.set_xlabel("sensitivity")
    return ax


def predicted_vs_actual(predicted: FloatArray, actual: FloatArray, flagged: Any = None,
                        ax: Any = None) -> Any:
    """Scatter of first-order predictions against re-solves, with the identity line;
    ``flagged`` points (active-set changes) drawn in another colour."""
    ax = _axes(ax)
    predicted, actual = np.ravel(predicted), np.ravel(actual)
    flagged = np.zeros(predicted.shape, bool) if flagged is None else np.ravel(flagged)
    ax.scatter(predicted[~flagged], actual[~flagged], s=12, label="same active set")
    if flagged.any():
        ax.scatter(predicted[flagged], actual[flagged], s=12, color="tab:red",
                   label="active set changes")
    finite = np.isfinite(actual)
    lo = float(min(predicted.min(), actual[finite].min(initial=0.0)))
    hi = float(max(predicted.max(), actual[finite].max(initial=0.0)))
    ax.plot([lo, hi], [lo, hi], "k--", linewidth=0.8)
    ax.set_xlabel("first-order prediction")
    ax.set_ylabel("re-solve")
    ax.legend()
    return ax
