"""Reference solution for membership-01 (instructors' copy): train on shifted copies, stop early.

A membership inference attack reads how much better the model fits its members than
other records (Yeom, Giacomelli, Fredrikson and Jha, CSF 2018: the leakage is bounded by
the generalisation gap). Two cheap regularisers close that gap without noise:

- data augmentation: every batch is moved by a random shift of up to 2 pixels, so the
  model never sees the same member twice and learns the digit, not the image
  (Kaya and Dumitras, ICML 2021, "When does data augmentation help with membership
  inference attacks?"; Choquette-Choo, Tramer, Carlini and Papernot, ICML 2021, warn
  that the attacker then averages over the same shifts: the grader does);
- fewer epochs (30 instead of the victim's 60) and a little weight decay (1e-3): early
  stopping and L2 regularisation (Shokri et al., S&P 2017, section on mitigations).

Measured on membership-01 (seed 1234, 1 thread): test accuracy 0.899 -> 0.936, worst-case
advantage 0.255 (loss threshold) -> 0.045 against a noise floor of 0.039, score 97.

What it does not give: a guarantee. DP-SGD (Abadi et al., CCS 2016; Opacus) bounds what
any attack can learn about one record; these regularisers only defeat the attacks
measured here, and a stronger attack (per-example calibrated, e.g. LiRA, Carlini et al.
2022) may find more.
"""

import torch
from torch import nn

SHIFT_PIXELS = 2
EPOCHS = 30
WEIGHT_DECAY = 1e-3


def shift_batch(images, generator):
    """One random shift of up to SHIFT_PIXELS pixels for the whole batch, border filled with 0."""
    height, width = images.shape[-2:]
    padded = nn.functional.pad(images, (SHIFT_PIXELS,) * 4)
    dy, dx = torch.randint(0, 2 * SHIFT_PIXELS + 1, (2,), generator=generator).tolist()
    return padded[..., dy : dy + height, dx : dx + width]


def train(x, y, tools):
    model = tools.build()
    optimizer = torch.optim.Adam(model.parameters(), lr=tools.learning_rate, weight_decay=WEIGHT_DECAY)
    images, labels = torch.from_numpy(x), torch.from_numpy(y)
    order = torch.Generator().manual_seed(tools.seed)
    model.train()
    for _ in range(EPOCHS):
        permutation = torch.randperm(len(images), generator=order)
        for start in range(0, len(images), tools.batch_size):
            batch = permutation[start : start + tools.batch_size]
            loss = nn.functional.cross_entropy(model(shift_batch(images[batch], order)), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()
