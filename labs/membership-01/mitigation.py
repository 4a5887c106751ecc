"""Your mitigation for membership-01: train a model whose outputs do not give its members away.

Run it:    secureml run membership-01 --mitigation labs/membership-01/mitigation.py
Read:      labs/membership-01/README.md

This starter runs, but scores low: it trains like the victim with weight decay, the
"regularise a bit" answer. The model still fits its 1,000 members almost perfectly, so
their loss stays far below a stranger's.
"""

import torch
from torch import nn

WEIGHT_DECAY = 1e-3


def train(x, y, tools):
    """Return a model of the victim's architecture, trained on the members x, y.

    x: float32 array (N, 1, 28, 28) in [0, 1], the members (the private training set).
    y: int64 array (N,), their labels.
    tools.build()          -> a freshly initialised model of the victim's architecture
    tools.train(x, y)      -> a model trained exactly like the victim (the victim itself)
    tools.epochs, tools.batch_size, tools.learning_rate -> the victim's recipe
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
    # TODO: this model still fits its members far better than anyone else.
    return model.eval()
