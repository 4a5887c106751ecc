"""Victim architectures and the deterministic, cached trainer.

Every victim is `nn.Sequential(features=..., head=Linear)`: `features` ends with the
penultimate representation. ART's poison detectors read the last top-level layer of a
Sequential, so a view of `features` alone gives them the representation they were
designed for (ART-FACTS pitfall 1; recall on 10% BadNets went from 0.67 to 0.93).

torch is imported inside functions so that importing this module (for the registry of
architecture names) stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from secureml.progress import NO_PROGRESS, Progress

if TYPE_CHECKING:
    import numpy as np
    import torch

    from secureml.cache import Cache
    from secureml.scenario import VictimConfig


def _mlp(input_shape: tuple[int, ...], num_classes: int, hidden=(256, 128)):
    from collections import OrderedDict

    from torch import nn

    channels, height, width = input_shape
    layers: list = [nn.Flatten()]
    width_in = channels * height * width
    for width_out in hidden:
        layers += [nn.Linear(width_in, width_out), nn.ReLU()]
        width_in = width_out
    return nn.Sequential(
        OrderedDict(features=nn.Sequential(*layers), head=nn.Linear(width_in, num_classes))
    )


def _cnn(input_shape: tuple[int, ...], num_classes: int, widths=(16, 32, 64)):
    """Two conv blocks and one hidden dense layer: 4 epochs on 4,000 MNIST images take ~2 s."""
    from collections import OrderedDict

    from torch import nn

    channels, height, width = input_shape
    conv1, conv2, dense = widths
    features = nn.Sequential(
        nn.Conv2d(channels, conv1, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(conv1, conv2, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(conv2 * (height // 4) * (width // 4), dense),
        nn.ReLU(),
    )
    return nn.Sequential(OrderedDict(features=features, head=nn.Linear(dense, num_classes)))


def _cnn_wide(input_shape: tuple[int, ...], num_classes: int):
    return _cnn(input_shape, num_classes, widths=(32, 64, 128))


ARCHITECTURES: dict[str, Callable[..., Any]] = {
    "mlp": _mlp,
    "cnn": _cnn,
    "cnn-wide": _cnn_wide,
}


def build(arch: str, input_shape: tuple[int, ...], num_classes: int, seed: int = 0):
    """A freshly initialised victim; the initial weights depend only on `seed`."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ARCHITECTURES[arch](tuple(input_shape), num_classes)


# What --device accepts (the CLI's click.Choice reads it from here).
DEVICES = ("cpu", "cuda", "auto")


def resolve_device(name: str = "cpu") -> torch.device:
    """`auto` uses CUDA when present; everything also runs on the CPU. Asking for CUDA where
    there is none is one clear error, not a traceback from deep inside torch."""
    import torch

    from secureml.errors import SecuremlError

    if name not in DEVICES:
        raise SecuremlError(f"unknown device '{name}'", expected=", ".join(DEVICES), found=name,
                            fix="pass --device cpu, cuda or auto")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SecuremlError(
            "--device cuda was asked for, and torch finds no CUDA GPU here",
            expected="a CUDA GPU and a CUDA build of torch",
            found=f"torch {torch.__version__}, torch.cuda.is_available() is False",
            fix="use --device cpu (every lab runs on a CPU) or --device auto (CUDA when present)",
        )
    return torch.device(name)


def make_optimizer(model, victim: VictimConfig, *, learning_rate: float | None = None):
    """The optimiser of the victim's recipe over `model` (SGD with momentum 0.9)."""
    import torch

    rate = victim.learning_rate if learning_rate is None else learning_rate
    if victim.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=rate, weight_decay=victim.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=rate, momentum=0.9, weight_decay=victim.weight_decay)


def train(
    victim: VictimConfig,
    x: np.ndarray,
    y: np.ndarray,
    *,
    num_classes: int,
    seed: int,
    device: str = "cpu",
    progress: Progress = NO_PROGRESS,
    label: str = "training victim",
):
    """Train a victim from scratch, deterministically for a given seed and thread count."""
    import torch
    from torch import nn

    target = resolve_device(device)
    model = build(victim.arch, x.shape[1:], num_classes, seed).to(target)
    optimizer = make_optimizer(model, victim)
    inputs = torch.from_numpy(x)
    labels = torch.from_numpy(y.astype("int64"))
    order = torch.Generator().manual_seed(seed)
    batches_per_epoch = -(-len(inputs) // victim.batch_size)
    model.train()
    with progress.task(label, total=victim.epochs * batches_per_epoch) as task:
        for _ in range(victim.epochs):
            permutation = torch.randperm(len(inputs), generator=order)
            for start in range(0, len(inputs), victim.batch_size):
                batch = permutation[start : start + victim.batch_size]
                optimizer.zero_grad(set_to_none=True)
                loss = nn.functional.cross_entropy(
                    model(inputs[batch].to(target)), labels[batch].to(target)
                )
                loss.backward()
                optimizer.step()
                task.advance()
    return model.eval().cpu()


def train_cached(
    cache: Cache,
    victim: VictimConfig,
    x: np.ndarray,
    y: np.ndarray,
    *,
    num_classes: int,
    seed: int,
    device: str = "cpu",
    progress: Progress = NO_PROGRESS,
    label: str = "training victim",
):
    """`train`, reusing weights cached under the hash of everything that determines them."""
    key = victim_key(victim, x, y, num_classes=num_classes, seed=seed)
    arrays = cache.load_tensors("victims", key)
    if arrays is not None:
        model = build(victim.arch, x.shape[1:], num_classes, seed)
        load_arrays(model, arrays)
        return model.eval()
    model = train(
        victim, x, y, num_classes=num_classes, seed=seed, device=device, progress=progress, label=label
    )
    cache.save_tensors("victims", key, model_arrays(model))
    return model


def victim_key(victim: VictimConfig, x, y, *, num_classes: int, seed: int) -> str:
    """The cache key of a trained victim: its recipe and data, and the code, versions and
    thread count that computed it."""
    from secureml.cache import content_key
    from secureml.versions import software_key

    software = software_key("secureml.models")
    return content_key(
        "victim", victim.model_dump(mode="json"), num_classes, seed, software, x, y
    )


def recipe_key(victim: VictimConfig, x, y, *, num_classes: int, seed: int) -> str:
    """What a training run is asked to do (recipe, data, seed), without where it runs: how the
    trainee's `tools.train` recognises the deployed victim's own training set, whatever
    thread count the (sandboxed) child runs at."""
    from secureml.cache import content_key

    return content_key("victim-recipe", victim.model_dump(mode="json"), num_classes, seed, x, y)


def model_arrays(model) -> dict[str, np.ndarray]:
    """The model's weights as contiguous numpy arrays, ready for safetensors."""
    return {name: tensor.detach().cpu().contiguous().numpy() for name, tensor in model.state_dict().items()}


def load_arrays(model, arrays: dict[str, np.ndarray]) -> None:
    """Load weights; raises ValueError naming the first mismatching tensor."""
    import torch

    expected = model.state_dict()
    if set(arrays) != set(expected):
        missing = sorted(set(expected) - set(arrays))
        extra = sorted(set(arrays) - set(expected))
        raise ValueError(f"weights do not fit the architecture (missing {missing}, unexpected {extra})")
    for name, tensor in expected.items():
        if tuple(arrays[name].shape) != tuple(tensor.shape):
            raise ValueError(
                f"weight '{name}' has shape {tuple(arrays[name].shape)}, expected {tuple(tensor.shape)}"
            )
    model.load_state_dict({name: torch.from_numpy(value.copy()) for name, value in arrays.items()})


def _batched(model, x: np.ndarray, fn, batch_size: int = 1024) -> np.ndarray:
    import numpy as np
    import torch

    model.eval()
    outputs = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            outputs.append(fn(torch.from_numpy(x[start : start + batch_size])).numpy())
    return np.concatenate(outputs) if outputs else np.zeros((0,))


def logits(model, x: np.ndarray) -> np.ndarray:
    return _batched(model, x, model)


def predict(model, x: np.ndarray) -> np.ndarray:
    return logits(model, x).argmax(axis=1)


def features(model, x: np.ndarray) -> np.ndarray:
    """The penultimate representation (the output of `model.features`)."""
    return _batched(model, x, model.features)


def accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    return float((predict(model, x) == y).mean()) if len(y) else float("nan")
