"""Gaming submission (membership): the victim's own recipe under another seed, and hope.

Retraining is noisy, and poisoning's grader had to learn that (a random filter scored up to
40.8 there by luck). Here the trainee retrains the victim with no defence at all and hopes
its advantage comes out below the victim's by chance. Measured on membership-01 over seeds
1-6: advantages 0.215, 0.219, 0.219, 0.227, 0.225 and 0.218 against the victim's 0.214
(floor 0.049), every one scoring 0: retraining moves the advantage by far less than the
headroom. SEED 1 came out lowest.
"""

import torch
from torch import nn

SEED = 1


def train(x, y, tools):
    torch.manual_seed(SEED)
    model = tools.build()
    optimizer = tools.optimizer(model)
    images, labels = torch.from_numpy(x), torch.from_numpy(y)
    order = torch.Generator().manual_seed(SEED)
    model.train()
    for _ in range(tools.epochs):
        permutation = torch.randperm(len(images), generator=order)
        for start in range(0, len(images), tools.batch_size):
            batch = permutation[start : start + tools.batch_size]
            loss = nn.functional.cross_entropy(model(images[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()
