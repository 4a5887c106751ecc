"""The two inversion attacks: ART's MIFace (white-box) and a training-based inversion
network (query-only; ART has none, so it is ours).

Both return reconstructions, one image per attacked label, as float32 NCHW in [0, 1].
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


def miface_starts(attack: MIFaceAttack, shape, num_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Starting images and labels: per class, zeros (Fredrikson et al.'s start), then noise.

    Several starts keep one degenerate point (e.g. every ReLU dead at zero) from hiding
    what the model reveals from everywhere else.
    """
    import numpy as np

    labels = np.repeat(np.arange(num_classes), attack.restarts)
    starts = np.zeros((len(labels), *shape), dtype=np.float32)
    noisy = np.arange(len(labels)) % attack.restarts != 0
    rng = generator(seed, "miface-starts")
    starts[noisy] = rng.uniform(0.0, attack.init_noise, size=(int(noisy.sum()), *shape))
    return starts, labels


def run_miface(
    model, reference: np.ndarray, attack: MIFaceAttack, *, num_classes: int, seed: int, progress: Progress
) -> Reconstructions:
    """ART's MIFace against `model` for every class, from `attack.restarts` starts each.

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
    classifier = art_classifier(attacked, input_shape=shape, num_classes=num_classes)
    starts, labels = miface_starts(attack, shape, num_classes, seed)
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
    with progress.task(f"ART MIFace: {num_classes} classes x {attack.restarts} starts, {attack.max_iter} steps"):
        images = inversion.infer(starts.copy(), labels)
    images = np.ascontiguousarray(np.clip(images, 0.0, 1.0), dtype=np.float32)
    probabilities = classifier.predict(images, batch_size=len(images))
    confidence = probabilities[np.arange(len(labels)), labels].astype(np.float32)
    return Reconstructions(images, labels.astype(np.int64), confidence)


# --------------------------------------------------------------------------- query-only: inversion network


def api_features(outputs: np.ndarray, probability_floor: float) -> np.ndarray:
    """What the inversion network reads: log-scores scaled to [0, 1].

    Logs, not raw scores: the small probabilities a classifier gives to other classes carry
    what it learned about them ("dark knowledge", Hinton, Vinyals and Dean, 2015, who taught
    a student network a digit it never saw from soft outputs alone). An API that rounds
    them to 0 hides exactly that.
    """
    import numpy as np

    clipped = np.clip(np.asarray(outputs, dtype=np.float64), probability_floor, 1.0)
    return (1.0 + np.log(clipped) / np.log(1.0 / probability_floor)).astype(np.float32)


def _decoder(num_classes: int, shape, hidden: list[int]):
    from torch import nn

    layers: list = []
    width = num_classes
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    pixels = 1
    for extent in shape:
        pixels *= extent
    layers += [nn.Linear(width, pixels), nn.Sigmoid(), nn.Unflatten(1, tuple(shape))]
    return nn.Sequential(*layers)


def train_inversion_net(
    aux_outputs: np.ndarray,
    aux_images: np.ndarray,
    attack: InversionNetAttack,
    *,
    seed: int,
    progress: Progress,
    start: int = 0,
):
    """Yang et al. (CCS 2019), "Neural network inversion in adversarial setting via background
    knowledge alignment": learn G(API(x)) ~ x on the attacker's own images.

    The attacker queries the API as deployed, so whatever the API truncates or rounds,
    the decoder is trained on exactly that (the paper's truncation alignment). The paper's
    decoder is transposed convolutions; for 28x28 digits a small MLP decoder trains in
    about two seconds on CPU and reconstructs as well.

    start: which random start (initial weights and batch order) this decoder uses.
    """
    import torch

    features = torch.from_numpy(api_features(aux_outputs, attack.probability_floor))
    images = torch.from_numpy(aux_images)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "inversion-net-init", start))
        decoder = _decoder(features.shape[1], aux_images.shape[1:], attack.hidden)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=attack.learning_rate)
    order = torch.Generator().manual_seed(derive_seed(seed, "inversion-net-order", start))
    steps = -(-len(features) // attack.batch_size)
    decoder.train()
    with progress.task("training the inversion network on the API's outputs", total=attack.epochs * steps) as task:
        for _ in range(attack.epochs):
            permutation = torch.randperm(len(features), generator=order)
            for start in range(0, len(features), attack.batch_size):
                batch = permutation[start : start + attack.batch_size]
                loss = ((decoder(features[batch]) - images[batch]) ** 2).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                task.advance()
    return decoder.eval()


def invert_outputs(decoder, outputs: np.ndarray, attack: InversionNetAttack) -> np.ndarray:
    import numpy as np
    import torch

    with torch.no_grad():
        images = decoder(torch.from_numpy(api_features(outputs, attack.probability_floor))).numpy()
    return np.ascontiguousarray(images, dtype=np.float32)
