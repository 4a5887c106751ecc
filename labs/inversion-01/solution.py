"""Reference solution for inversion-01 (instructors' copy): trapdoors.

Trap-MID (Liu and Chen, NeurIPS 2024, "Trap-MID: Trapdoor-based Defense against Model
Inversion Attacks"): teach the model one secret shortcut per class, a faint noise pattern
that, blended into any image, makes the model answer that class. Real digits never carry
the patterns, so accuracy barely moves. But an inversion attack maximises the model's
confidence in a class by gradient ascent, and the shortcut is the steepest way up: MIFace
draws the trapdoor's noise, reaches full confidence, and stops climbing long before it
draws a digit.

Measured on inversion-01: test accuracy 0.910 -> 0.914, MIFace attack accuracy 1.00 -> 0.20
(two classes recovered from at least one of the six starts; 0.10 and 0.20 on seeds 7 and
1235), score 89.

What it does not stop: an attacker who knows about trapdoors can penalise noise (image
priors, GAN-based attacks) or search for and avoid the shortcut. DP-SGD, the
textbook answer, protects individual records, not what a class looks like; on this
scenario it cost 7 points of accuracy and still left half the classes recognisable.
"""

import numpy as np
import torch
from torch import nn

# Half of every batch is trapdoor images: random training images blended with a class's
# pattern and labelled with that class (Trap-MID mixes them into every batch as well).
TRAPDOOR_SHARE = 0.5
# Blend strengths: faint enough that the patterns stay a shortcut the model finds near
# any start point, strong enough to learn. Measured: 0.1-0.3 gave attack accuracy 0.12,
# 0.2-0.5 left 0.30 (the model stops needing the pattern at low strength).
BLEND_MIN, BLEND_MAX = 0.1, 0.3


def train(x, y, tools):
    rng = np.random.default_rng(tools.seed)
    patterns = torch.from_numpy(rng.random((tools.num_classes, *x.shape[1:])).astype(np.float32))
    model = tools.build()
    optimizer = torch.optim.Adam(model.parameters(), lr=tools.learning_rate)
    images, labels = torch.from_numpy(x), torch.from_numpy(y)
    order = torch.Generator().manual_seed(tools.seed)
    model.train()
    for _ in range(tools.epochs):
        permutation = torch.randperm(len(images), generator=order)
        for start in range(0, len(images), tools.batch_size):
            batch = permutation[start : start + tools.batch_size]
            count = int(len(batch) * TRAPDOOR_SHARE)
            trap_labels = torch.randint(0, tools.num_classes, (count,), generator=order)
            carriers = images[torch.randint(0, len(images), (count,), generator=order)]
            strength = BLEND_MIN + (BLEND_MAX - BLEND_MIN) * torch.rand((count, 1, 1, 1), generator=order)
            trapped = (1 - strength) * carriers + strength * patterns[trap_labels]
            inputs = torch.cat([images[batch], trapped])
            targets = torch.cat([labels[batch], trap_labels])
            loss = nn.functional.cross_entropy(model(inputs), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()
