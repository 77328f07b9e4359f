"""Shared fixtures. Tests never touch the network and never change a model they are given."""
from __future__ import annotations

import os

import pytest
import torch
from torch import nn
from torch.nn import functional as F

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two pytest workers on two cores: one thread each (and in every process a test starts), so
    # that torch's threads do not spin against the other worker's.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


def pixel_sum_unit(channels: int, bias: float) -> nn.Sequential:
    """ReLU of each 3 x 3 sum of all pixels and colours minus ``bias``: dead on dark images, alive
    only where the image is bright enough (never, for a bias of 27 or more on images in [0, 1])."""
    conv = nn.Conv2d(3, channels, 3, padding=1)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        conv.bias.fill_(-bias)
    return nn.Sequential(conv, nn.ReLU())


def with_statistics(model: nn.Module, seed: int = 0) -> nn.Module:
    """A model whose batch normalisations are not the identity (random running statistics and affine)."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            channels = module.num_features
            if module.track_running_stats:
                module.running_mean.copy_(torch.randn(channels, generator=generator) * 0.3)
                module.running_var.copy_(torch.rand(channels, generator=generator) + 0.5)
            if module.affine:
                module.weight.data.copy_(torch.rand(channels, generator=generator) + 0.5)
                module.bias.data.copy_(torch.randn(channels, generator=generator) * 0.2)
    return model.eval()


class Counter(nn.Module):
    """Identity that counts how often it runs (for early-exit tests)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def forward(self, x):
        self.count += 1
        return x


class TinyNet(nn.Module):
    """conv-BN-ReLU(inplace) -> shared ReLU twice -> conv -> counter -> pool -> linear.

    ``relu`` runs twice per forward (a reused module); ``bn`` is followed by an in-place ReLU.
    """

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.act = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.relu = nn.ReLU()
        self.conv3 = nn.Conv2d(8, 6, 3, stride=2, padding=1)
        self.counter = Counter()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, classes)

    def forward(self, x):
        x = self.act(self.bn(self.conv1(x)))
        x = self.relu(self.conv2(x) - 0.1)
        x = self.relu(x - 0.05)
        x = self.counter(self.conv3(x))
        return self.fc(torch.flatten(self.pool(x), 1))


class FunctionalNet(nn.Module):
    """A model that calls F.relu instead of ReLU modules."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3)
        self.conv2 = nn.Conv2d(4, 4, 3)

    def forward(self, x):
        return F.relu(self.conv2(F.relu(self.conv1(x)))).mean(dim=(2, 3))


@pytest.fixture
def tiny() -> TinyNet:
    torch.manual_seed(0)
    model = TinyNet()
    with torch.no_grad():  # non-trivial running statistics, so eval and train differ
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
