"""Your mitigation for evasion-01: return a model that adversarial examples cannot fool.

Run it:    secureml run evasion-01 --mitigation labs/evasion-01/mitigation.py
Read:      labs/evasion-01/README.md

This starter runs, but scores about 0: it trains the victim's architecture exactly as
the victim was trained, on clean images only.
"""

import torch
import torch.nn.functional as F


def harden(x, y, tools):
    """Return a torch model with the victim's architecture.

    x: float32 array (N, 1, 28, 28) in [0, 1], the training set; y: int64 array (N,).
    tools.build()                 -> a fresh model of the victim's architecture
    tools.optimizer(model)        -> the victim's optimiser (Adam, lr 0.002)
    tools.epochs, tools.batch_size, tools.epsilon (the attacker's budget, L-inf)
    tools.pgd(model, xb, yb, epsilon=..., steps=..., step_size=..., random_start=True)
                                  -> adversarial versions of a batch (steps=1 is FGSM)
    tools.robust_accuracy(model, x, y) -> a quick PGD estimate, to check your progress
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
            # TODO: train on adversarial examples instead: replace xb by a perturbed batch
            # made with tools.pgd(model, xb, yb, ...). See the README.
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(xb), yb).backward()
            optimizer.step()
    return model.eval()
