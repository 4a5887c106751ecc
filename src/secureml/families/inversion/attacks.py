"""The two inversion attacks: ART's MIFace (white-box) and a training-based inversion
network (query-only; ART has none, so it is ours).

Both give reconstructions as float32 NCHW in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from secureml.randomness import derive_seed, generator

if TYPE_CHECKING:
    import numpy as np

    from secureml.families.inversion.config import InversionNetAttack, MIFaceAttack
    from secureml.progress import Progress


@dataclass(frozen=True)
class Reconstructions:
    images: np.ndarray  # (N, C, H, W) in [0, 1]
    labels: np.ndarray  # (N,) the class each image was meant to reveal
    # MIFace only: the attacked model's probability of `labels` on the images (after the
    # attacker's logit rescaling). Near 0 means the ascent never got anywhere.
    confidence: np.ndarray | None = None


# --------------------------------------------------------------------------- white-box: MIFace


def logit_std(model, reference: np.ndarray) -> float:
    """Mean over reference images of the standard deviation of the model's logits."""
    from secureml import models

    return float(models.logits(model, reference).std(axis=1).mean())


def _attacked_model(model, scale: float):
    """softmax(scale * logits): MIFace's cost 1 - p[label] assumes probabilities (ART-FACTS 6)."""
    import torch
    from torch import nn

    class Rescale(nn.Module):
        def forward(self, logits: torch.Tensor) -> torch.Tensor:
            return logits * scale

    return nn.Sequential(model, Rescale(), nn.Softmax(dim=1)).eval()


@dataclass(frozen=True)
class MIFaceStarts:
    images: np.ndarray  # (N, C, H, W) where the ascent starts
    labels: np.ndarray  # (N,) the class each start attacks
    # (N,) True for the blank and noise starts: nothing in them comes from real images. When
    # every one of a class's neutral starts is stuck, the gradient has vanished where the
    # attack begins; that is masking (Athalye, Carlini and Wagner, ICML 2018), not a defence.
    neutral: np.ndarray


def miface_starts(
    attack: MIFaceAttack, auxiliary: np.ndarray, auxiliary_labels: np.ndarray, num_classes: int, seed: int
) -> MIFaceStarts:
    """Per class: blank (Fredrikson et al.'s start), uniform noise per scale, the mean of the
    attacker's own images, and a few of its images of other classes.

    The starts drawn from real images keep a model whose units are all off at the blank and
    faint noise (the gradient is zero there) from hiding what it reveals from everywhere
    else: measured on inversion-01, from the mean image MIFace recovered 9 of 10 classes of
    such a model, and of the undefended victim.
    """
    import numpy as np

    rng = generator(seed, "miface-starts")
    shape = auxiliary.shape[1:]
    images, labels, neutral = [], [], []
    for label in range(num_classes):
        drawn = [np.zeros(shape)] + [rng.uniform(0.0, scale, size=shape) for scale in attack.noise_scales]
        others = np.flatnonzero(auxiliary_labels != label)
        chosen = rng.choice(others, size=min(attack.auxiliary_samples, len(others)), replace=False)
        informed = [auxiliary.mean(axis=0), *auxiliary[chosen]]
        images += drawn + informed
        labels += [label] * (len(drawn) + len(informed))
        neutral += [True] * len(drawn) + [False] * len(informed)
    return MIFaceStarts(
        np.stack(images).astype(np.float32), np.array(labels, dtype=np.int64), np.array(neutral, dtype=bool)
    )


def run_miface(
    model,
    starts: MIFaceStarts,
    reference: np.ndarray,
    attack: MIFaceAttack,
    *,
    num_classes: int,
    progress: Progress,
    device: str = "cpu",
) -> Reconstructions:
    """ART's MIFace against `model`, from every start towards its class.

    The attacker has the weights, so it sets the softmax temperature itself: logits are
    rescaled to `attack.logit_std` on its reference images. Without that, multiplying the
    output layer by 100 saturates the softmax, MIFace's gradient vanishes, and a model that
    reveals just as much would look safe (gradient masking, not a defence).
    """
    import copy

    import numpy as np
    from art.attacks.inference.model_inversion import MIFace

    from secureml.art_bridge import art_classifier

    shape = tuple(reference.shape[1:])
    scale = attack.logit_std / max(logit_std(model, reference), 1e-12)
    # A copy: art_classifier freezes the weights it is given.
    attacked = _attacked_model(copy.deepcopy(model), scale)
    classifier = art_classifier(attacked, input_shape=shape, num_classes=num_classes, device=device)
    labels = starts.labels
    inversion = MIFace(
        classifier,
        # ART checks these types strictly (ART-FACTS 6): int, int, float, float.
        max_iter=int(attack.max_iter),
        # ART keeps an image active while `cost <= threshold` or its cost stopped falling;
        # cost is 1 - p <= 1 always, so every image runs exactly max_iter steps.
        window_length=int(attack.max_iter),
        threshold=1.0,
        learning_rate=float(attack.learning_rate),
        batch_size=len(labels),
        verbose=False,
    )
    per_class = len(labels) // num_classes
    with progress.task(f"ART MIFace: {num_classes} classes x {per_class} starts, {attack.max_iter} steps"):
        images = inversion.infer(starts.images.copy(), labels)
    images = np.ascontiguousarray(np.clip(images, 0.0, 1.0), dtype=np.float32)
    probabilities = classifier.predict(images, batch_size=len(images))
    confidence = probabilities[np.arange(len(labels)), labels].astype(np.float32)
    return Reconstructions(images, labels, confidence)


# --------------------------------------------------------------------------- query-only: inversion network


def _decoder(features: int, shape, hidden: list[int]):
    from torch import nn

    layers: list = []
    width = features
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    pixels = 1
    for extent in shape:
        pixels *= extent
    layers += [nn.Linear(width, pixels), nn.Sigmoid(), nn.Unflatten(1, tuple(shape))]
    return nn.Sequential(*layers)


def train_inversion_net(
    aux_features: np.ndarray,
    aux_images: np.ndarray,
    attack: InversionNetAttack,
    *,
    seed: int,
    progress: Progress,
    start: int = 0,
    view: str = "",
    device: str = "cpu",
):
    """Yang et al. (CCS 2019), "Neural network inversion in adversarial setting via background
    knowledge alignment": learn G(API(x)) ~ x on the attacker's own images.

    aux_features: what the attacker reads from the API's answers to its own images (a view
    of the outputs, secureml.api_outputs). The attacker queries the API as deployed, so
    whatever the API truncates or rounds, the decoder is trained on exactly that (the
    paper's truncation alignment). The paper's decoder is transposed convolutions; for
    28x28 digits a small MLP decoder trains in about two seconds on CPU and reconstructs as
    well.

    start: which random start (initial weights and batch order) this decoder uses.
    view: the view's name; decoders of different views start from different weights.
    """
    import torch

    from secureml.models import resolve_device

    target = resolve_device(device)
    features = torch.from_numpy(aux_features)
    images = torch.from_numpy(aux_images)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "inversion-net-init", view, start))
        decoder = _decoder(features.shape[1], aux_images.shape[1:], attack.hidden).to(target)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=attack.learning_rate)
    order = torch.Generator().manual_seed(derive_seed(seed, "inversion-net-order", view, start))
    steps = -(-len(features) // attack.batch_size)
    decoder.train()
    label = f"training an inversion network on the API's outputs ({view or 'features'})"
    with progress.task(label, total=attack.epochs * steps) as task:
        for _ in range(attack.epochs):
            permutation = torch.randperm(len(features), generator=order)
            for first in range(0, len(features), attack.batch_size):
                batch = permutation[first : first + attack.batch_size]
                loss = ((decoder(features[batch].to(target)) - images[batch].to(target)) ** 2).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                task.advance()
    return decoder.eval().cpu()


def invert(decoder, features: np.ndarray) -> np.ndarray:
    """The decoder's reconstructions of the images behind `features` (one view of outputs)."""
    import numpy as np
    import torch

    with torch.no_grad():
        images = decoder(torch.from_numpy(features)).numpy()
    return np.ascontiguousarray(images, dtype=np.float32)
