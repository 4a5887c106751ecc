"""What the trainee's function gets besides the data. Runs in the (sandboxed) child.

Everything here reads only the inputs folder the family wrote; nothing reaches back into
the grader. The attacks offered here are plain torch, for training loops and quick
self-checks; the grader's verdict comes from ART's suite in the parent.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from secureml import models
from secureml.families.base import Inputs, Tools

if TYPE_CHECKING:
    import numpy as np


# The inputs file of `preprocess`'s validation images (from the training split).
VALIDATION = "validation"


def _as_tensor(value):
    import torch

    return value if isinstance(value, torch.Tensor) else torch.from_numpy(value)


def pgd(
    model,
    x,
    y,
    *,
    norm: str,
    epsilon: float,
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = True,
    generator=None,
):
    """Untargeted PGD in plain torch (Madry et al., 2018); `steps=1, random_start=False,
    step_size=epsilon` is FGSM. Returns adversarial images of the same type as `x`.

    step_size: defaults to 2.5 * epsilon / steps.
    generator: a torch.Generator for the random start (seeded runs stay reproducible).
    """
    import torch
    import torch.nn.functional as F

    as_numpy = not isinstance(x, torch.Tensor)
    images = _as_tensor(x).float()
    labels = _as_tensor(y).long()
    step = step_size if step_size is not None else 2.5 * epsilon / steps
    shape = (-1,) + (1,) * (images.dim() - 1)

    def clamp_to_ball(delta):
        if norm == "inf":
            return delta.clamp(-epsilon, epsilon)
        lengths = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(shape)
        return delta * (epsilon / lengths).clamp(max=1.0)

    delta = torch.zeros_like(images)
    if random_start:
        noise = torch.rand(images.shape, generator=generator) * 2 - 1
        if norm == "inf":
            delta = noise * epsilon
        else:
            radius = torch.rand(len(images), generator=generator).view(shape) * epsilon
            delta = noise / noise.flatten(1).norm(dim=1).clamp_min(1e-12).view(shape) * radius
    delta = (images + delta).clamp(0, 1) - images
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = F.cross_entropy(model(images + delta), labels)
        (gradient,) = torch.autograd.grad(loss, delta)
        if norm == "inf":
            move = gradient.sign()
        else:
            move = gradient / gradient.flatten(1).norm(dim=1).clamp_min(1e-12).view(shape)
        delta = clamp_to_ball(delta.detach() + step * move)
        delta = (images + delta).clamp(0, 1) - images
    adversarial = (images + delta).detach()
    return adversarial.numpy() if as_numpy else adversarial


class _EvasionTools(Tools):
    """Every lab's tools (`Tools`), and the threat model: tools.norm ("inf" or "2"), tools.epsilon."""

    def __init__(self, inputs: Inputs) -> None:
        super().__init__(inputs)
        self.norm: str = inputs.extras["norm"]
        self.epsilon: float = inputs.extras["epsilon"]


class HardeningTools(_EvasionTools):
    """For `harden(x, y, tools)`: every lab's tools, the threat model, and

    tools.pgd(model, x, y, ...)     -> adversarial images (plain torch PGD; steps=1 is FGSM)
    tools.robust_accuracy(model, x, y) -> a quick PGD estimate (the grader's suite is stronger)
    tools.budget_s, tools.time_left_s()
    """

    def __init__(self, inputs: Inputs) -> None:
        super().__init__(inputs)
        self.budget_s: float = inputs.extras["budget_s"]
        self._started = time.monotonic()

    def time_left_s(self) -> float:
        return self.budget_s - (time.monotonic() - self._started)

    def pgd(self, model, x, y, *, epsilon: float | None = None, steps: int = 10,
            step_size: float | None = None, random_start: bool = True, generator=None):
        return pgd(
            model, x, y, norm=self.norm, epsilon=self.epsilon if epsilon is None else epsilon,
            steps=steps, step_size=step_size, random_start=random_start, generator=generator,
        )

    def robust_accuracy(self, model, x, y, *, steps: int = 20, limit: int = 500) -> float:
        """PGD robust accuracy on the first `limit` images: a quick, optimistic estimate."""
        import torch

        x, y = x[:limit], y[:limit]
        was_training = model.training
        model.eval()
        adversarial = self.pgd(model, x, y, steps=steps, generator=torch.Generator().manual_seed(self.seed))
        model.train(was_training)
        return models.accuracy(model, adversarial, y)


class PreprocessTools(_EvasionTools):
    """For `preprocess(tools)`: every lab's tools, the threat model, and steps from the menu
    to try on validation images.

    tools.bit_depth(bits), tools.median(window), tools.jpeg(quality), tools.gaussian_noise(sigma)
    tools.evaluate(steps)  -> clean accuracy, naive-PGD and BPDA-PGD accuracy on tools.x_val
    tools.x_val, tools.y_val, tools.menu, tools.max_steps
    """

    def __init__(self, inputs: Inputs) -> None:
        super().__init__(inputs)
        self.menu: list[str] = inputs.extras["menu"]
        self.max_steps: int = inputs.extras["max_steps"]
        arrays = inputs.arrays(VALIDATION)
        self.x_val: np.ndarray = arrays["x"]
        self.y_val: np.ndarray = arrays["y"]

    @staticmethod
    def bit_depth(bits: int) -> dict[str, Any]:
        return {"name": "bit-depth", "bits": bits}

    @staticmethod
    def median(window: int) -> dict[str, Any]:
        return {"name": "median", "window": window}

    @staticmethod
    def jpeg(quality: int) -> dict[str, Any]:
        return {"name": "jpeg", "quality": quality}

    @staticmethod
    def gaussian_noise(sigma: float) -> dict[str, Any]:
        return {"name": "gaussian-noise", "sigma": sigma}

    def evaluate(self, steps, *, count: int = 200, pgd_steps: int = 20) -> dict[str, float]:
        """Clean accuracy, and PGD accuracy with naive (exact) and BPDA gradients.

        A quick check on validation images; the grader adds EOT, more attacks and Square."""
        import torch

        from secureml.families.evasion.pipeline import defended_model

        pipeline = pipeline_from(steps)
        x, y = self.x_val[:count], self.y_val[:count]
        victim = self.victim().requires_grad_(False)
        results = {}
        for mode in ("exact", "bpda"):
            model = defended_model(victim, pipeline, seed=self.seed, mode=mode, eot_samples=4)
            adversarial = pgd(model, x, y, norm=self.norm, epsilon=self.epsilon, steps=pgd_steps,
                              random_start=mode == "bpda", generator=torch.Generator().manual_seed(self.seed))
            deployed = defended_model(victim, pipeline, seed=self.seed, mode="bpda", eot_samples=1)
            results[f"{mode}_pgd_accuracy" if mode == "bpda" else "naive_pgd_accuracy"] = models.accuracy(
                deployed, adversarial, y
            )
            results["clean_accuracy"] = models.accuracy(deployed, x, y)
        return results


def pipeline_from(steps) -> Any:
    """Validate a list of steps (dicts from the tools, or step objects) into a pipeline."""
    from secureml.families.evasion.config import PreprocessPipeline

    if isinstance(steps, PreprocessPipeline):
        return steps
    if isinstance(steps, dict) and "steps" in steps:
        steps = steps["steps"]
    if not isinstance(steps, (list, tuple)):
        raise TypeError(f"preprocess must return a list of steps, got {type(steps).__name__}")
    normalised = [step.model_dump() if hasattr(step, "model_dump") else step for step in steps]
    return PreprocessPipeline.model_validate({"steps": normalised})
