"""The one place that wraps our torch models for ART."""

from __future__ import annotations

from typing import Any


def art_classifier(
    model: Any,
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    device: str = "cpu",
    freeze: bool = True,
) -> Any:
    """An ART PyTorchClassifier over `model`, for inputs in [0, 1].

    `freeze` turns off weight gradients: attacks need input gradients only, and an unfrozen
    model makes every `loss_gradient` call compute weight gradients too (ART-FACTS: about
    half of ART's overhead over plain torch PGD).
    """
    import torch
    from art.estimators.classification import PyTorchClassifier

    model.eval()
    if freeze:
        model.requires_grad_(False)
    return PyTorchClassifier(
        model=model,
        loss=torch.nn.CrossEntropyLoss(),
        input_shape=tuple(input_shape),
        nb_classes=num_classes,
        clip_values=(0.0, 1.0),
        device_type=art_device_type(device),
    )


def art_device_type(device: str) -> str:
    """ART's name for where a PyTorch estimator runs ("gpu" or "cpu") for our --device."""
    from secureml.models import resolve_device

    return "gpu" if resolve_device(device).type == "cuda" else "cpu"


def one_hot(labels, num_classes: int):
    import numpy as np

    return np.eye(num_classes, dtype=np.float32)[labels]
