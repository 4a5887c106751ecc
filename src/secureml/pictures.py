"""Image grids, shared by every family: rows of images with a caption under each."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Cell:
    image: np.ndarray  # (C, H, W) in [0, 1], or (H, W)
    caption: str = ""
    highlight: bool = False  # draw the caption in red, e.g. a successful attack


def image_grid(
    rows: Sequence[tuple[str, Sequence[Cell]]],
    path: Path,
    *,
    title: str,
    cmap: str = "gray",
) -> Path:
    """Draw `rows` (label, cells) to a PNG and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = max((len(cells) for _, cells in rows), default=1)
    figure, axes = plt.subplots(
        len(rows), columns, figsize=(1.3 * columns + 1.4, 1.55 * len(rows) + 0.6), squeeze=False
    )
    for row_index, (label, cells) in enumerate(rows):
        for column in range(columns):
            axis = axes[row_index][column]
            axis.set_xticks([])
            axis.set_yticks([])
            if column >= len(cells):
                axis.axis("off")
                continue
            cell = cells[column]
            image = np.asarray(cell.image)
            if image.ndim == 3 and image.shape[0] in (1, 3):
                image = image.transpose(1, 2, 0)
            if image.ndim == 3 and image.shape[2] == 1:
                image = image[:, :, 0]
            axis.imshow(np.clip(image, 0, 1), cmap=cmap if image.ndim == 2 else None, vmin=0, vmax=1)
            axis.set_xlabel(cell.caption, fontsize=8, color="crimson" if cell.highlight else "black")
            if column == 0:
                axis.set_ylabel(label, fontsize=8, rotation=0, ha="right", va="center")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
