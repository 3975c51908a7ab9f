"""torchvision's ``r2plus1d_18``, written from its module layout in plain torch (torchvision's
compiled ops do not load here): an independent source of torchvision-layout state_dicts."""

from __future__ import annotations

import torch
from torch import nn


class TorchvisionStem(nn.Sequential):
    def __init__(self) -> None:
        super().__init__(nn.Conv3d(3, 45, (1, 7, 7), (1, 2, 2), (0, 3, 3), bias=False),
                         nn.BatchNorm3d(45), nn.ReLU(inplace=True),
                         nn.Conv3d(45, 64, (3, 1, 1), (1, 1, 1), (1, 0, 0), bias=False),
                         nn.BatchNorm3d(64), nn.ReLU(inplace=True))


class TorchvisionConv2Plus1D(nn.Sequential):
    def __init__(self, inp: int, out: int, mid: int, stride: int = 1) -> None:
        super().__init__(nn.Conv3d(inp, mid, (1, 3, 3), (1, stride, stride), (0, 1, 1),
                                   bias=False),
                         nn.BatchNorm3d(mid), nn.ReLU(inplace=True),
                         nn.Conv3d(mid, out, (3, 1, 1), (stride, 1, 1), (1, 0, 0), bias=False))


class TorchvisionBlock(nn.Module):
    """torchvision's BasicBlock with Conv2Plus1D, written from its layout (no torchvision)."""

    def __init__(self, inp: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        mid = (inp * planes * 3 * 3 * 3) // (inp * 3 * 3 + 3 * planes)
        self.conv1 = nn.Sequential(TorchvisionConv2Plus1D(inp, planes, mid, stride),
                                   nn.BatchNorm3d(planes), nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(TorchvisionConv2Plus1D(planes, planes, mid),
                                   nn.BatchNorm3d(planes))
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or inp != planes:
            self.downsample = nn.Sequential(nn.Conv3d(inp, planes, 1, stride, bias=False),
                                            nn.BatchNorm3d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(self.conv2(self.conv1(x)) + residual)


class TorchvisionR2Plus1D18(nn.Module):
    """The module tree and forward of torchvision.models.video.r2plus1d_18."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.stem = TorchvisionStem()
        widths, inp = (64, 128, 256, 512), 64
        for i, planes in enumerate(widths, start=1):
            stride = 1 if i == 1 else 2
            setattr(self, f"layer{i}", nn.Sequential(TorchvisionBlock(inp, planes, stride),
                                                     TorchvisionBlock(planes, planes)))
            inp = planes
        self.avgpool = nn.AdaptiveAvgPool3d((1, 1, 1))
        self.fc = nn.Linear(512, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
        return self.fc(self.avgpool(x).flatten(1))
