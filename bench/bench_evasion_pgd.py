"""PGD through the project (ART's PGD, our batching and estimator) against a plain PyTorch
PGD loop: same model, images, batch size, steps and random start. Prints images/s and the
time ratio (target: project / raw torch <= 1.10). ART's own `generate` is shown for reference.

    python bench/bench_evasion_pgd.py [--images 1000] [--batch 100] [--steps 10] [--repeats 5]

The runs are interleaved and the median of each is reported, because a shared 2-core
machine is noisy.
"""

from __future__ import annotations

import argparse
import statistics
import time


def raw_torch_pgd(model, x, y, *, epsilon, step_size, steps, batch_size, seed):
    """The reference: the textbook L-inf PGD loop, random start, on a frozen model."""
    import torch
    import torch.nn.functional as F

    generator = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, len(x), batch_size):
        images = torch.from_numpy(x[start : start + batch_size])
        labels = torch.from_numpy(y[start : start + batch_size])
        adversarial = (images + (torch.rand(images.shape, generator=generator) * 2 - 1) * epsilon).clamp(0, 1)
        for _ in range(steps):
            adversarial.requires_grad_(True)
            loss = F.cross_entropy(model(adversarial), labels)
            (gradient,) = torch.autograd.grad(loss, adversarial)
            adversarial = adversarial.detach() + step_size * gradient.sign()
            adversarial = torch.min(torch.max(adversarial, images - epsilon), images + epsilon).clamp(0, 1)
        out.append(adversarial.numpy())
    import numpy as np

    return np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import numpy as np
    import torch
    from art.attacks.evasion import ProjectedGradientDescent

    from secureml import models, scenario
    from secureml.art_bridge import art_classifier
    from secureml.cache import Cache
    from secureml.datasets import load_split
    from secureml.families.evasion import attacks

    loaded = scenario.load("evasion-01")
    split = load_split(loaded.dataset, loaded.seed)
    victim = models.train_cached(
        Cache(), loaded.victim, split.x_train, split.y_train, num_classes=split.num_classes, seed=loaded.seed
    )
    x = np.ascontiguousarray(split.x_test[: args.images])
    y = split.y_test[: args.images]
    epsilon = loaded.threat.epsilon
    step_size = 2.5 * epsilon / args.steps
    victim.eval().requires_grad_(False)
    estimator = attacks.classifier(victim, input_shape=split.shape, num_classes=split.num_classes)

    def project():
        return attacks.pgd(
            estimator, x, y, norm="inf", epsilon=epsilon, step_size=step_size, steps=args.steps,
            restarts=1, batch_size=args.batch, seed=0, judge=lambda images: models.predict(victim, images),
        )

    def raw():
        return raw_torch_pgd(victim, x, y, epsilon=epsilon, step_size=step_size, steps=args.steps,
                             batch_size=args.batch, seed=0)

    art_estimator = art_classifier(victim, input_shape=split.shape, num_classes=split.num_classes)

    def art_generate():
        attack = ProjectedGradientDescent(
            art_estimator, norm=np.inf, eps=epsilon, eps_step=step_size, max_iter=args.steps,
            num_random_init=1, batch_size=args.batch, verbose=False,
        )
        return attack.generate(x, y=y)

    runs = {"raw torch": raw, "project": project, "ART generate": art_generate}
    for run in runs.values():  # warm-up: lazy imports, allocator, thread pool
        run()
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    accuracy: dict[str, float] = {}
    for _ in range(args.repeats):
        for name, run in runs.items():
            started = time.perf_counter()
            adversarial = run()
            seconds[name].append(time.perf_counter() - started)
            accuracy[name] = models.accuracy(victim, adversarial, y)
    print(f"PGD-{args.steps}, L-inf epsilon {epsilon:g}, {len(x)} images, batch {args.batch}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}")
    base = statistics.median(seconds["raw torch"])
    for name, values in seconds.items():
        median = statistics.median(values)
        print(f"  {name:13s} {len(x) / median:7.0f} images/s   ratio {median / base:.2f}   "
              f"robust accuracy {accuracy[name]:.3f}")
    ratio = statistics.median(seconds["project"]) / base
    print(f"project / raw torch = {ratio:.2f} (target <= 1.10)")


if __name__ == "__main__":
    main()
