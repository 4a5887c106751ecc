"""Gaming submission (inversion-01): every first-layer unit is off at MIFace's usual starts.

Trained like the victim, plus a penalty that keeps each first-layer unit's input below
zero on a blank image and on faint noise. Real digits still switch units on, so the model
keeps its accuracy; at a blank or noisy start every gradient is zero and MIFace cannot
move. Started from the mean of the attacker's own images, it recovers the digits as from
the undefended victim. Expected: flagged, blinded classes count as recovered, score <= 10.
"""

import torch
from torch import nn

MARGIN = 1.0  # how far below zero every unit's input must stay on the probes
NOISE = 0.25  # probes: blank images and uniform noise in [0, NOISE]


def train(x, y, tools):
    model = tools.build()
    first = next(module for module in model.modules() if isinstance(module, nn.Linear))
    optimizer = torch.optim.Adam(model.parameters(), lr=tools.learning_rate)
    images, labels = torch.from_numpy(x), torch.from_numpy(y)
    order = torch.Generator().manual_seed(tools.seed)
    model.train()
    for _ in range(tools.epochs + 5):
        permutation = torch.randperm(len(images), generator=order)
        for start in range(0, len(images), tools.batch_size):
            batch = permutation[start : start + tools.batch_size]
            probes = torch.rand((32, *images.shape[1:]), generator=order) * NOISE
            probes[:8] = 0
            dead = torch.relu(first(probes.flatten(1)) + MARGIN).mean()
            loss = nn.functional.cross_entropy(model(images[batch]), labels[batch]) + dead
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()
