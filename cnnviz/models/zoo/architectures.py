"""The architectures of the built-in models.

Both follow the lecture's classic patterns and torchvision's naming (``features``, ``classifier``),
so that their layer references read like those of torchvision's VGG: ``features.0`` is the first
convolution, ``classifier.1`` (patterns) or ``classifier.2`` (photos) the last linear layer (the logits).
"""
from __future__ import annotations

from torch import nn


class PatternNet(nn.Module):
    """LeNet-like: conv-ReLU-pool, conv-ReLU-pool, global average, one fully connected layer.

    Input ``N x 3 x 48 x 48`` (any size works: the average pooling makes it size-free). A linear
    layer on averaged maps makes each class score a weighted sum of the maps, so the class
    activation map of a class shows where its evidence is (Zhou et al., 2016).

    ``features``: 0 conv 5x5 (16), 1 ReLU, 2 max-pool, 3 conv 5x5 (48), 4 ReLU, 5 max-pool;
    ``classifier``: 0 flatten, 1 linear (one output per class).
    """

    def __init__(self, classes: int = 11) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(16, 48, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(48, classes))

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)))


def _vgg_block(inputs: int, outputs: int) -> list[nn.Module]:
    return [
        nn.Conv2d(inputs, outputs, 3, padding=1), nn.BatchNorm2d(outputs), nn.ReLU(inplace=True),
        nn.Conv2d(outputs, outputs, 3, padding=1), nn.BatchNorm2d(outputs), nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    ]


class PhotoNet(nn.Module):
    """VGG-like: four blocks of (conv-BN-ReLU) x 2 and a max-pool, global average, a linear layer.

    Input ``N x 3 x 64 x 64``. Widths 16, 32, 64, 128. ``features`` holds seven modules per block:
    block b (0-3) has its convolutions at ``features.{7b}`` and ``features.{7b+3}``, its ReLUs at
    ``features.{7b+2}`` and ``features.{7b+5}``, its pool at ``features.{7b+6}``.
    ``classifier``: 0 flatten, 1 dropout, 2 linear (the logits).
    """

    widths = (16, 32, 64, 128)

    def __init__(self, classes: int = 17) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        previous = 3
        for width in self.widths:
            layers += _vgg_block(previous, width)
            previous = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(0.3), nn.Linear(previous, classes))

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)))
