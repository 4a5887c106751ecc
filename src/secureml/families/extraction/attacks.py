"""The extraction attacker: its out-of-distribution query images (held-out handwriting from
another scanner), and ART's Copycat CNN.

The copy is trained by ART's `CopycatCNN` (Correia-Silva et al., IJCNN 2018) against an
ART `BlackBoxClassifier` whose predictions are a lookup table of the answers the
trainee's API already gave: the real attack, on the real answers, without running
trainee code in the grader's process. The attacker's own labelled images enter the same
table with their true labels (it labels its own images itself).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from secureml.progress import NO_PROGRESS, Progress
from secureml.randomness import numpy_global_seed

if TYPE_CHECKING:
    import numpy as np

    from secureml.families.extraction.config import CopycatAttack


def rescanned(images: np.ndarray, side: int, *, scan: int = 8, levels: int = 17) -> np.ndarray:
    """Handwriting from another scanner: each image read at `scan` x `scan` pixels with
    `levels` grey levels (as scikit-learn's digits were scanned), then upscaled (bilinear) to
    `side` x `side` and centred in a frame of the images' own size.

    The attacker's images are digits held out of the victim's training, and the trainee's
    code is never given them. They are still mnist-5k images, which a trainee holds (the
    wheel bundles the dataset): an API that rescanned every pristine image could look for
    them, as `tests/test_known_holes.py` records for the honest users' side. (With
    scikit-learn's public digits as the queries, an API that matched each query against
    them at every size and shift recognised every attacker query, with honest users' best
    match at most 0.95 correlation against the attacker's 1.000.)"""
    import numpy as np
    import torch

    batch = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    low = torch.nn.functional.adaptive_avg_pool2d(batch, scan)
    low = torch.round(low * (levels - 1)) / (levels - 1)
    up = torch.nn.functional.interpolate(low, size=(side, side), mode="bilinear", align_corners=False)
    height, width = images.shape[-2:]
    top, left = (height - side) // 2, (width - side) // 2
    framed = torch.nn.functional.pad(up, (left, width - side - left, top, height - side - top))
    return np.ascontiguousarray(framed.clamp(0, 1).numpy(), dtype=np.float32)


def as_the_attacker_sends_them(images: np.ndarray, rng: np.random.Generator, shift: int = 2) -> np.ndarray:
    """The attacker's copies of its images, each moved by up to `shift` pixels either way and
    drawn at an ink intensity of its own (0.8 to 1.0), all drawn from `rng` (the scenario's
    seed): no two scans of a page are alike, and the copy learns from the variety."""
    import numpy as np

    moved = np.empty_like(images)
    rows, cols = rng.integers(-shift, shift + 1, size=(2, len(images)))
    for index, image in enumerate(images):
        moved[index] = np.roll(image, (rows[index], cols[index]), axis=(-2, -1))
    gain = rng.uniform(0.8, 1.0, size=(len(images),) + (1,) * (images.ndim - 1))
    return np.ascontiguousarray(moved * gain, dtype=np.float32)


INK = 0.1  # a pixel above this is ink (MNIST's background is 0)


# How an attacker who has read the API's defence presents its pages: each presentation is
# another attacker with the same pages and budget, and the most faithful copy of any of them
# counts. A per-query detector keyed to one statistic of the pages (their grey ink, say) is
# what an adaptive attacker changes first (Tramer et al., "On Adaptive Attacks to
# Adversarial Example Defenses", 2020): measured on extraction-01, seed 1234, binarising the
# pages at 0.5 let every one of them through a grey-ink test that flagged all of them as sent.
def _as_scanned(queries: np.ndarray, labelled: np.ndarray) -> np.ndarray:
    return queries


def _binarised(queries: np.ndarray, labelled: np.ndarray) -> np.ndarray:
    """Strokes in full ink, background blank: no grey left."""
    import numpy as np

    return (queries > 0.5).astype(np.float32)


def _ink_matched(queries: np.ndarray, labelled: np.ndarray) -> np.ndarray:
    """Each page's ink (pixels above 0.1) mapped, rank by rank, onto the ink values of the
    attacker's own labelled images: the users' grey levels in the page's own shape."""
    import numpy as np

    ink = np.sort(labelled[labelled > INK])
    out = np.array(queries, dtype=np.float32, copy=True)
    for page in out:
        strokes = page > INK
        count = int(strokes.sum())
        if count > 1 and len(ink):
            ranks = page[strokes].argsort(kind="stable").argsort(kind="stable") / (count - 1)
            page[strokes] = np.quantile(ink, ranks)
    return out


def _sharpened(queries: np.ndarray, labelled: np.ndarray) -> np.ndarray:
    """Unsharp-masked (amount 1, Gaussian sigma 0.8 pixels) to undo the upscaling's blur,
    then ink-matched: of the attacker's edits a probe tried on the reference's rescanning
    detector (texture, blur, another resampling, sharpening, each with or without ink
    matching), the one it flagged least (83.5% of the pages, seed 1234)."""
    import numpy as np
    from scipy.ndimage import gaussian_filter

    pages = np.asarray(queries, dtype=np.float32)
    blurred = gaussian_filter(pages, sigma=(0,) * (pages.ndim - 2) + (0.8, 0.8))
    return _ink_matched(np.clip(2 * pages - blurred, 0, 1).astype(np.float32), labelled)


PRESENTATIONS = {
    "as-scanned": _as_scanned,
    "binarised": _binarised,
    "ink-matched": _ink_matched,
    "sharpened": _sharpened,
}


def _soft_cross_entropy():
    """Cross-entropy against a target distribution. A loss that is not torch's
    CrossEntropyLoss keeps ART's PyTorchClassifier from reducing soft targets to their
    argmax (`reduce_labels`), so the same loss trains on labels and on soft answers."""
    import torch

    class SoftCrossEntropy(torch.nn.Module):
        def forward(self, logits, target):
            return -(target * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()

    return SoftCrossEntropy()


def steal(
    x: np.ndarray,
    targets: np.ndarray,
    attack: CopycatAttack,
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    seed: int,
    progress: Progress = NO_PROGRESS,
    label: str = "training a copy with ART's Copycat CNN",
) -> Any:
    """A copy of `attack.copy_arch` trained by ART's CopycatCNN on `x` and the answers `targets`.

    targets: (N, num_classes) class distributions (one-hot labels or soft answers), looked
    up by ART's BlackBoxClassifier for exactly the images in `x`.
    """
    import numpy as np
    import torch
    from art.attacks.extraction import CopycatCNN
    from art.estimators.classification import BlackBoxClassifier, PyTorchClassifier

    from secureml import models

    x = np.ascontiguousarray(x, dtype=np.float32)
    targets = np.ascontiguousarray(targets, dtype=np.float32)
    copy = models.build(attack.copy_arch, input_shape, num_classes, seed)
    thief = PyTorchClassifier(
        copy,
        loss=_soft_cross_entropy(),
        optimizer=torch.optim.Adam(copy.parameters(), lr=attack.learning_rate),
        input_shape=input_shape,
        nb_classes=num_classes,
        clip_values=(0.0, 1.0),
    )
    answers = BlackBoxClassifier((x, targets), input_shape=input_shape, nb_classes=num_classes, clip_values=(0.0, 1.0))
    # use_probability: the table already holds what this reading of the answers is.
    copycat = CopycatCNN(
        answers,
        batch_size_fit=attack.batch_size,
        batch_size_query=attack.query_batch,
        nb_epochs=attack.epochs,
        nb_stolen=len(x),
        use_probability=True,
    )
    # CopycatCNN draws its queries with np.random and ART's fit shuffles with torch's
    # global generator: both seeded here and put back afterwards.
    with progress.task(label, total=1) as task, torch.random.fork_rng(devices=[]), numpy_global_seed(seed):
        torch.manual_seed(seed)
        copycat.extract(x, thieved_classifier=thief)
        task.advance()
    return copy.eval()
