"""User models for `models.load("tests.data.user_models:<function>")` in test_graphs.py:
each function returns (model, example_inputs), or fails the way a user's might."""

from __future__ import annotations

import torch
from torch import nn


class TinyConvNet(nn.Module):
    """conv -> bn -> relu, a residual 1x1 conv, pooling and a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.skip = nn.Conv2d(3, 8, 1)
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn(self.conv(x))) + self.skip(x)
        y = nn.functional.max_pool2d(y, 2)
        return self.head(nn.functional.adaptive_avg_pool2d(y, 1).flatten(1))


def tiny_convnet() -> tuple[nn.Module, tuple]:
    return TinyConvNet(), (torch.randn(1, 3, 8, 8),)


def raises() -> tuple[nn.Module, tuple]:
    raise RuntimeError("weights file missing")


def not_a_model() -> tuple:
    return "model", (torch.randn(1),)


NOT_CALLABLE = 3


class Branchy(nn.Module):
    """Python control flow on a tensor's value: torch.export cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return self.lin(x)
        return -x


def untraceable() -> tuple[nn.Module, tuple]:
    return Branchy(), (torch.randn(2, 4),)
