"""Your mitigation for evasion-03: an L2-robust digits model that keeps its clean accuracy.

Run it:    secureml run evasion-03 --mitigation labs/evasion-03/mitigation.py
Read:      labs/evasion-03/README.md

This starter runs, but scores only about 20 (measured 21.7: robust accuracy 0.07 where
full marks need 0.3): it is FGSM-style training with the L-inf habit of a sign step, the
wrong geometry for an L2 attacker, who spends the whole budget on a few pixels.
"""

import torch
import torch.nn.functional as F


def harden(x, y, tools):
    """Return a torch model with the victim's architecture.

    x: float32 (N, 1, 8, 8) in [0, 1]; y: int64 (N,).
    tools.build(), tools.optimizer(model), tools.epochs, tools.batch_size
    tools.norm == "2", tools.epsilon: the attacker's L2 budget
    tools.pgd(model, xb, yb, epsilon=..., steps=..., step_size=...) -> L2 adversarial batch
    tools.robust_accuracy(model, x, y) -> a quick PGD estimate
    """
    images, labels = torch.from_numpy(x), torch.from_numpy(y)
    generator = torch.Generator().manual_seed(tools.seed)
    model = tools.build().train()
    optimizer = tools.optimizer(model)
    for _ in range(tools.epochs):
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(images), tools.batch_size):
            batch = order[start : start + tools.batch_size]
            xb, yb = images[batch], labels[batch]
            # TODO: an L-inf sign step of size 0.1 is not what an L2 attacker does.
            xb.requires_grad_(True)
            (gradient,) = torch.autograd.grad(F.cross_entropy(model(xb), yb), xb)
            adversarial = (xb + 0.1 * gradient.sign()).clamp(0, 1).detach()
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(adversarial), yb).backward()
            optimizer.step()
    return model.eval()
