"""Small models of kinds cnnviz did not write, for tests/test_foreign_models.py (also loaded by the
command line as ``tests/foreign_models.py:NAME``): none declares an input size, mean or std."""
from __future__ import annotations

import torch
from torch import fx, nn


class LeNet(nn.Module):
    """A notebook LeNet: grey 32 x 32 input (only that size runs), PReLU, flatten then Linear(400, 120)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 6, 5), nn.Conv2d(6, 16, 5)
        self.act1, self.act2, self.act3 = nn.PReLU(6), nn.PReLU(16), nn.PReLU()
        self.pool = nn.MaxPool2d(2)
        self.fc1, self.fc2 = nn.Linear(400, 120), nn.Linear(120, 10)

    def forward(self, x):
        x = self.pool(self.act1(self.conv1(x)))
        x = self.pool(self.act2(self.conv2(x)))
        return self.fc2(self.act3(self.fc1(x.flatten(1))))


class SmoothNet(nn.Module):
    """No ReLU anywhere: SiLU, GELU and Hardswish (as in EfficientNet, ConvNeXt, MobileNetV3)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.SiLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.Hardswish(),
        )
        self.pool, self.head = nn.AdaptiveAvgPool2d(1), nn.Linear(16, 5)

    def forward(self, x):
        return self.head(self.pool(self.features(x)).flatten(1))


class GatedNet(nn.Module):
    """Its only ReLU sits in a squeeze-excite gate (pooled 1 x 1): guided backprop does not apply."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(8, 4, 1), nn.ReLU(), nn.Conv2d(4, 8, 1), nn.Sigmoid())
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        x = torch.tanh(self.conv(x))
        x = torch.tanh(self.conv2(x * self.gate(x)))
        return self.head(x.mean(dim=(2, 3)))


def lenet() -> nn.Module:
    torch.manual_seed(0)
    return LeNet()


def smooth() -> nn.Module:
    torch.manual_seed(0)
    return SmoothNet()


def gated() -> nn.Module:
    torch.manual_seed(0)
    return GatedNet()


def traced() -> fx.GraphModule:
    """LeNet as a ``torch.fx.GraphModule`` (generated node and module names)."""
    return fx.symbolic_trace(lenet())


def scripted() -> torch.jit.ScriptModule:
    """SmoothNet as a TorchScript trace at 64 x 64."""
    model = smooth().eval()
    return torch.jit.trace(model, torch.zeros(1, 3, 64, 64))


class SoftmaxHead(nn.Module):
    """An exported-graph style classifier whose output already is a softmax (functional)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = smooth()

    def forward(self, x):
        return torch.softmax(self.body(x), dim=1)


def softmax_head() -> nn.Module:
    torch.manual_seed(0)
    return SoftmaxHead()


def detector() -> nn.Module:
    """A fully convolutional detector: N x 3 x H x W in, N x 2 x H/4 x W/4 class maps out."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.PReLU(8), nn.Conv2d(8, 16, 3, stride=2, padding=1),
                         nn.PReLU(16), nn.Conv2d(16, 2, 1))


class TextDirection(nn.Module):
    """An OCR line classifier: greyscale 32 x 100 lines (CRNN's size), flattened into a Linear
    (the size is declared nowhere, and no square size gives the Linear its 3200 features)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Linear(16 * 8 * 25, 2)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


def text_direction() -> nn.Module:
    torch.manual_seed(5)
    return TextDirection().eval()
