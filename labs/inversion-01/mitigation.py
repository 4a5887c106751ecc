"""Your mitigation for inversion-01: train a model whose MIFace inversions reveal nothing.

Run it:    secureml run inversion-01 --mitigation labs/inversion-01/mitigation.py
Read:      labs/inversion-01/README.md

This starter runs, but scores low: it trains like the victim with heavy weight decay, the
"strong regularisation" answer. A smoother model has smoother gradients, and MIFace
climbs gradients: they still point at the digits.
"""

import torch
from torch import nn

WEIGHT_DECAY = 1e-3


def train(x, y, tools):
    """Return a model of the victim's architecture, trained on x, y.

    x: float32 array (N, 1, 28, 28) in [0, 1], the private training set.
    y: int64 array (N,), its labels.
    tools.build()         -> a freshly initialised model of the victim's architecture
    tools.train(x, y)     -> a model trained exactly like the victim (the victim itself)
    tools.epochs, tools.batch_size, tools.learning_rate -> the victim's recipe
    tools.optimizer(model) -> the victim's optimiser (Adam); the starter builds its own
    tools.accuracy(model, x, y), tools.predict(model, x), tools.num_classes, tools.seed
    """
    model = tools.build()
    optimizer = torch.optim.Adam(model.parameters(), lr=tools.learning_rate, weight_decay=WEIGHT_DECAY)
    images, labels = torch.from_numpy(x), torch.from_numpy(y)
    order = torch.Generator().manual_seed(tools.seed)
    model.train()
    for _ in range(tools.epochs):
        permutation = torch.randperm(len(images), generator=order)
        for start in range(0, len(images), tools.batch_size):
            batch = permutation[start : start + tools.batch_size]
            loss = nn.functional.cross_entropy(model(images[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    # TODO: this model still answers MIFace with the digits themselves.
    return model.eval()
