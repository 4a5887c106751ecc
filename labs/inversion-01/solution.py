"""Reference solution for inversion-01 (instructors' copy): trapdoors.

Trap-MID (Liu and Chen, NeurIPS 2024, "Trap-MID: Trapdoor-based Defense against Model
Inversion Attacks"): teach the model one secret shortcut per class, a faint noise pattern
that, blended into any image, makes the model answer that class. Real digits never carry
the patterns, so accuracy barely moves. But an inversion attack maximises the model's
confidence in a class by gradient ascent, and the shortcut is the steepest way up: MIFace
draws the trapdoor's noise, reaches full confidence, and stops climbing long before it
draws a digit.

Two more things keep accuracy: the model trains twice the victim's epochs, and every
clean image is shifted by up to a pixel (the trapdoor images take a share of each batch).

Measured on inversion-01 with 23 seeds (the public one, the automatic variants' and 17
others): test accuracy up from the victim's on every seed (0.909 -> 0.940 on the public
seed), MIFace attack accuracy 0.0-0.1 on 22 seeds (score 100) and 0.2 on one (88.9).
The version before (blends 0.1-0.3, half of each batch, the victim's epochs, no shifts)
lost up to 2 points of accuracy and scored 67-81 on five of six seeds.

What it does not stop: an attacker who knows about trapdoors can penalise noise (image
priors, GAN-based attacks) or search for and avoid the shortcut. DP-SGD, the
textbook answer, protects individual records, not what a class looks like; on this
scenario it cost 7 points of accuracy and still left half the classes recognisable.
"""

import numpy as np
import torch
from torch import nn

# Trapdoor images per clean image in a batch: random training images blended with a class's
# pattern and labelled with that class (Trap-MID mixes them into every batch as well).
# Measured on four seeds (blends 0.05-0.15): 0.5 and 0.75 left attack accuracy 0.3 on one
# of them, 0.65 at most 0.2.
TRAPDOOR_SHARE = 0.65
# Blend strengths: faint enough that the patterns stay a shortcut the model finds near
# any start point, strong enough to learn. The fainter the pattern, the less of it MIFace
# draws before the model is sure, and the less it changes the evaluator's reading of the
# start. Measured: 0.1-0.3 left attack accuracy 0.4 on some seeds, 0.05-0.15 0.3 on one
# of 17, 0.03-0.1 at most 0.2 on 23.
BLEND_MIN, BLEND_MAX = 0.03, 0.1
# Trapdoors cost accuracy (up to 2 points with the victim's recipe); these win it back.
EPOCHS_PER_VICTIM_EPOCH = 2
MAX_SHIFT = 1  # pixels, each way, for the clean images of a batch


def train(x, y, tools):
    rng = np.random.default_rng(tools.seed)
    patterns = torch.from_numpy(rng.random((tools.num_classes, *x.shape[1:])).astype(np.float32))
    model = tools.build()
    optimizer = torch.optim.Adam(model.parameters(), lr=tools.learning_rate)
    images, labels = torch.from_numpy(x), torch.from_numpy(y)
    order = torch.Generator().manual_seed(tools.seed)
    model.train()
    for _ in range(EPOCHS_PER_VICTIM_EPOCH * tools.epochs):
        permutation = torch.randperm(len(images), generator=order)
        for start in range(0, len(images), tools.batch_size):
            batch = permutation[start : start + tools.batch_size]
            count = int(len(batch) * TRAPDOOR_SHARE)
            trap_labels = torch.randint(0, tools.num_classes, (count,), generator=order)
            carriers = images[torch.randint(0, len(images), (count,), generator=order)]
            strength = BLEND_MIN + (BLEND_MAX - BLEND_MIN) * torch.rand((count, 1, 1, 1), generator=order)
            trapped = (1 - strength) * carriers + strength * patterns[trap_labels]
            dx, dy = (int(v) for v in torch.randint(-MAX_SHIFT, MAX_SHIFT + 1, (2,), generator=order))
            shifted = torch.roll(images[batch], shifts=(dx, dy), dims=(2, 3))  # digits have blank borders
            inputs = torch.cat([shifted, trapped])
            targets = torch.cat([labels[batch], trap_labels])
            loss = nn.functional.cross_entropy(model(inputs), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()
