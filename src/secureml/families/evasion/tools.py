"""What the trainee's function gets besides the data. Runs in the (sandboxed) child.

Everything here reads only the inputs folder the family wrote; nothing reaches back into
the grader. The attacks offered here are plain torch, for training loops and quick
self-checks; the grader's verdict comes from ART's suite in the parent.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from secureml import models

if TYPE_CHECKING:
    import numpy as np


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


class _Task:
    """The shared part: the task description the family wrote."""

    def __init__(self, folder: Path) -> None:
        from secureml.scenario import VictimConfig

        self._folder = Path(folder)
        task = json.loads((self._folder / "task.json").read_text())
        self.num_classes: int = task["num_classes"]
        self.class_names: list[str] = task["class_names"]
        self.input_shape: tuple[int, ...] = tuple(task["input_shape"])
        self.seed: int = task["seed"]
        self.norm: str = task["norm"]
        self.epsilon: float = task["epsilon"]
        self._victim_config = VictimConfig.model_validate(task["victim"])

    def victim(self):
        """A copy of the deployed, undefended victim (eval mode)."""
        from safetensors.numpy import load_file

        model = self.build()
        models.load_arrays(model, load_file(str(self._folder / "victim.safetensors")))
        return model.eval()

    def build(self):
        """A fresh model of the victim's architecture, initialised from the scenario's seed."""
        return models.build(self._victim_config.arch, self.input_shape, self.num_classes, self.seed)

    @staticmethod
    def predict(model, x: np.ndarray) -> np.ndarray:
        return models.predict(model, x)

    @staticmethod
    def accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
        return models.accuracy(model, x, y)


class HardeningTools(_Task):
    """For `harden(x, y, tools)`.

    tools.build()                   -> a fresh, seeded model of the victim's architecture
    tools.victim()                  -> a copy of the deployed (undefended) victim
    tools.optimizer(model)          -> the optimiser the victim was trained with
    tools.epochs, tools.batch_size, tools.learning_rate: the victim's recipe
    tools.norm, tools.epsilon       -> the threat model ("inf" or "2", radius)
    tools.pgd(model, x, y, ...)     -> adversarial images (plain torch PGD; steps=1 is FGSM)
    tools.robust_accuracy(model, x, y) -> a quick PGD estimate (the grader's suite is stronger)
    tools.budget_s, tools.time_left_s()
    tools.accuracy(model, x, y), tools.predict(model, x), tools.num_classes, tools.seed
    """

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        task = json.loads((self._folder / "task.json").read_text())
        self.budget_s: float = task["budget_s"]
        self.epochs = self._victim_config.epochs
        self.batch_size = self._victim_config.batch_size
        self.learning_rate = self._victim_config.learning_rate
        self._started = time.monotonic()

    def time_left_s(self) -> float:
        return self.budget_s - (time.monotonic() - self._started)

    def optimizer(self, model, learning_rate: float | None = None):
        import torch

        rate = learning_rate if learning_rate is not None else self._victim_config.learning_rate
        decay = self._victim_config.weight_decay
        if self._victim_config.optimizer == "adam":
            return torch.optim.Adam(model.parameters(), lr=rate, weight_decay=decay)
        return torch.optim.SGD(model.parameters(), lr=rate, momentum=0.9, weight_decay=decay)

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


class PreprocessTools(_Task):
    """For `preprocess(tools)`: build steps from the menu and try them on validation images.

    tools.bit_depth(bits), tools.median(window), tools.jpeg(quality), tools.gaussian_noise(sigma)
    tools.evaluate(steps)  -> clean accuracy, naive-PGD and BPDA-PGD accuracy on tools.x_val
    tools.x_val, tools.y_val, tools.victim(), tools.menu, tools.max_steps
    tools.norm, tools.epsilon, tools.num_classes, tools.seed
    """

    def __init__(self, folder: Path) -> None:
        from safetensors.numpy import load_file

        super().__init__(folder)
        task = json.loads((self._folder / "task.json").read_text())
        self.menu: list[str] = task["menu"]
        self.max_steps: int = task["max_steps"]
        arrays = load_file(str(self._folder / "validation.safetensors"))
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
