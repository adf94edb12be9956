"""Figure layouts that stay readable at the book's page width: at most three panels a row.

Example::

    fig, axes = panel_grid(5)              # two rows of three; the sixth place left empty
    for ax, (name, cohort) in zip(axes, cohorts.items()):
        ...

A chapter's figure is shown at the width of the text column (about 750 px); a row of three 4.4-inch panels is
13.2 inches, drawn at about 0.55 of its size, so 10-point tick labels stay above 5 px. Rows of five or more
panels shrink them below that.
"""
from __future__ import annotations

import math

import numpy as np

MAX_PER_ROW = 3
PANEL_SIZE = (4.4, 3.4)      # inches per panel


def panel_grid(n_panels: int, per_row: int = MAX_PER_ROW, panel_size: tuple[float, float] = PANEL_SIZE,
               **subplots_kw):
    """A figure with `n_panels` axes, at most `per_row` (<= 3) a row -> (figure, [n_panels] array of axes).

    Places of the last row left over are removed. subplots_kw go to `plt.subplots` (sharex, gridspec_kw, ...).
    """
    import matplotlib.pyplot as plt
    if n_panels < 1:
        raise ValueError(f"panel_grid: need at least one panel, got {n_panels}")
    if not 1 <= per_row <= MAX_PER_ROW:
        raise ValueError(f"panel_grid: per_row must be 1 to {MAX_PER_ROW} (readable at the page width), got {per_row}")
    cols = min(n_panels, per_row)
    rows = math.ceil(n_panels / cols)
    fig, grid = plt.subplots(rows, cols, figsize=(cols * panel_size[0], rows * panel_size[1]), squeeze=False,
                             **subplots_kw)
    axes = list(grid.flat)
    for ax in axes[n_panels:]:
        ax.remove()
    return fig, np.array(axes[:n_panels], dtype=object)
