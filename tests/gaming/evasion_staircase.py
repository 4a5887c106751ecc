"""Gaming evasion: make the victim's architecture piecewise-constant purely through its weights.

The first convolution becomes a staircase: channel pairs relu(K (x - t)) and
relu(K (x - t) - 1) with K = 10,000, whose difference (taken by the second convolution)
is a step of the pixel at each threshold t. The rest of the network is trained on the
stepped image as usual, so clean accuracy stays; but the input gradient is zero almost
everywhere, which blinds every gradient attack. Eight levels are as fine as the image
needs, so the model is no more robust than the victim.

Expected: a masking check fires, the grader escalates, and the score is about 0.

With THRESHOLDS = [0.5] the same construction binarises MNIST inside the weights, a
genuinely robust defence at L-inf epsilon 0.2 (Xu et al., "Feature Squeezing", 2018):
the tests use it as the control whose flags the escalation must refute.
"""

import torch
import torch.nn.functional as F
from torch import nn

STEEPNESS = 1e4
THRESHOLDS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]


def stepped(x, thresholds):
    """What the first block computes: each threshold's step, max-pooled."""
    steps = torch.cat([(STEEPNESS * (x - t)).clamp(0, 1) for t in thresholds], dim=1)
    return F.max_pool2d(steps, 2)


def harden(x, y, tools):
    thresholds = THRESHOLDS
    model = tools.build()
    conv1, conv2, dense, head = model.features[0], model.features[3], model.features[7], model.head
    levels = len(thresholds)
    # Its own layers start from the scenario's seed: torch's global generator is wherever the
    # process left it (in a test run, after other tests), and the binarising control scored
    # 73 and 65 in two runs of the same code before this line.
    torch.manual_seed(tools.seed)
    # The rest of the network, trained on the stepped image.
    rest = nn.Sequential(
        nn.Conv2d(levels, conv2.out_channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(dense.in_features, dense.out_features), nn.ReLU(), nn.Linear(head.in_features, head.out_features),
    )
    images, labels = torch.from_numpy(x), torch.from_numpy(y)
    generator = torch.Generator().manual_seed(tools.seed)
    optimizer = torch.optim.Adam(rest.parameters(), lr=tools.learning_rate)
    for _ in range(tools.epochs):
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(images), tools.batch_size):
            batch = order[start : start + tools.batch_size]
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(rest(stepped(images[batch], thresholds)), labels[batch]).backward()
            optimizer.step()
    with torch.no_grad():
        for layer in (conv1, conv2):
            layer.weight.zero_()
            layer.bias.zero_()
        for level, threshold in enumerate(thresholds):
            up, down = 2 * level, 2 * level + 1
            conv1.weight[up, 0, 1, 1] = STEEPNESS
            conv1.bias[up] = -STEEPNESS * threshold
            conv1.weight[down, 0, 1, 1] = STEEPNESS
            conv1.bias[down] = -STEEPNESS * threshold - 1
            conv2.weight[:, up] = rest[0].weight[:, level]
            conv2.weight[:, down] = -rest[0].weight[:, level]
        conv2.bias.copy_(rest[0].bias)
        dense.load_state_dict(rest[4].state_dict())
        head.load_state_dict(rest[6].state_dict())
    return model.eval()
