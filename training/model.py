"""R(2+1)D video classifier in plain PyTorch.

Each 3-D convolution is factorised into a spatial (1 x k x k) and a temporal (k x 1 x 1)
convolution with a non-linearity between them (Tran et al., 2018). Width and depth are
configurable, so one class builds both the small CPU model and an R(2+1)D-18-sized GPU
model. ``forward(clip) -> (logits, embedding)``; clip is the card's normalised float input
(N, 3, T, H, W), as torchvision's video models take it. The R(2+1)D-18 preset has
torchvision's ``r2plus1d_18`` layout to the parameter, and :func:`from_torchvision` renames
a torchvision state_dict into this module's keys.

Only torch is imported here, so the model can be benchmarked on a bare GPU machine.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class ModelConfig:
    """Architecture, saved beside the weights (the input contract is the model card)."""

    num_classes: int
    stem_width: int = 24
    widths: tuple[int, ...] = (24, 48, 96, 128)
    blocks: tuple[int, ...] = (1, 1, 1, 1)
    dropout: float = 0.1

    @classmethod
    def r2plus1d_18(cls, num_classes: int, **overrides: Any) -> "ModelConfig":
        """The R(2+1)D-18 layout: 64-512 channels, two residual blocks per stage."""
        params: dict[str, Any] = dict(stem_width=64, widths=(64, 128, 256, 512),
                                      blocks=(2, 2, 2, 2), dropout=0.0)
        params.update(overrides)
        return cls(num_classes=num_classes, **params)

    @property
    def embedding_dim(self) -> int:
        """Size of the pooled embedding the service logs."""
        return self.widths[-1]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, for MLflow metadata."""
        data = asdict(self)
        data["widths"] = list(self.widths)
        data["blocks"] = list(self.blocks)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        """Inverse of :meth:`to_dict`."""
        data = dict(data)
        for key in ("widths", "blocks"):
            data[key] = tuple(data.get(key, ()))
        return cls(**data)


def _mid_channels(in_ch: int, out_ch: int, k_t: int = 3, k_s: int = 3) -> int:
    """Channels between the spatial and temporal convolutions, matching a full 3-D conv's
    parameter count (the rule of the R(2+1)D paper)."""
    return (k_t * k_s * k_s * in_ch * out_ch) // (k_s * k_s * in_ch + k_t * out_ch)


class Conv2Plus1D(nn.Sequential):
    """Spatial conv, batch norm, ReLU, temporal conv."""

    def __init__(
        self, in_ch: int, out_ch: int, mid_ch: int, stride: int = 1,
        k_s: int = 3, k_t: int = 3, t_stride: int | None = None,
    ) -> None:
        t_stride = stride if t_stride is None else t_stride
        super().__init__(
            nn.Conv3d(in_ch, mid_ch, (1, k_s, k_s), stride=(1, stride, stride),
                      padding=(0, k_s // 2, k_s // 2), bias=False),
            nn.BatchNorm3d(mid_ch),
            nn.ReLU(inplace=True),
            nn.Conv3d(mid_ch, out_ch, (k_t, 1, 1), stride=(t_stride, 1, 1),
                      padding=(k_t // 2, 0, 0), bias=False),
        )


class ResidualBlock(nn.Module):
    """Two (2+1)D convolutions with an identity or projected shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        # As in the reference R(2+1)D, both convolutions share the first one's mid width.
        mid = _mid_channels(in_ch, out_ch)
        self.conv1 = Conv2Plus1D(in_ch, out_ch, mid, stride)
        self.bn1 = nn.BatchNorm3d(out_ch)
        self.conv2 = Conv2Plus1D(out_ch, out_ch, mid)
        self.bn2 = nn.BatchNorm3d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv3d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm3d(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class R2Plus1D(nn.Module):
    """Video classifier: ``forward(clip) -> (logits, embedding)``."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if len(config.widths) != len(config.blocks):
            raise ValueError("widths and blocks must have one entry per stage")
        self.config = config
        stem_mid = max(8, round(config.stem_width * 45 / 64))  # 45 for the reference 64
        # The stem keeps full temporal resolution but halves space; later stages halve both.
        self.stem = nn.Sequential(
            Conv2Plus1D(3, config.stem_width, stem_mid, stride=2, k_s=7, t_stride=1),
            nn.BatchNorm3d(config.stem_width),
            nn.ReLU(inplace=True),
        )
        stages: list[nn.Module] = []
        in_ch = config.stem_width
        for i, (width, n_blocks) in enumerate(zip(config.widths, config.blocks)):
            stride = 1 if i == 0 else 2
            layers = [ResidualBlock(in_ch, width, stride)]
            layers += [ResidualBlock(width, width) for _ in range(n_blocks - 1)]
            stages.append(nn.Sequential(*layers))
            in_ch = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(in_ch, config.num_classes)

    def forward(self, clip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.stages(self.stem(clip))
        embedding = self.pool(x).flatten(1)
        logits = self.head(self.dropout(embedding))
        return logits.float(), embedding.float()


def prepare_for_device(model: R2Plus1D, device: torch.device) -> R2Plus1D:
    """Move the model; on CUDA also use the channels_last_3d layout the cuDNN kernels prefer."""
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last_3d)
    return model


# torchvision's VideoResNet keys -> this module's: its stem's layers 0, 1, 3 are our stem
# Conv2Plus1D and layer 4 our stem BN; a block's conv1/conv2 are (Conv2Plus1D, BN) pairs that
# we name convN and bnN; downsample is our shortcut; fc our head.
_STEM = {"0": "stem.0.0", "1": "stem.0.1", "3": "stem.0.3", "4": "stem.1"}
_BLOCK = re.compile(r"^layer(\d)\.(\d+)\.(conv[12]\.[01]|downsample)\.(.+)$")


def _rename(key: str) -> str:
    head, _, rest = key.partition(".")
    if head == "fc":
        return f"head.{rest}"
    if head == "stem":
        index, _, tail = rest.partition(".")
        if index in _STEM:
            return f"{_STEM[index]}.{tail}"
    match = _BLOCK.match(key)
    if match:
        layer, block, part, tail = match.groups()
        prefix = f"stages.{int(layer) - 1}.{block}"
        if part == "downsample":
            return f"{prefix}.shortcut.{tail}"
        conv, index = part.split(".")
        name = conv if index == "0" else conv.replace("conv", "bn")
        return f"{prefix}.{name}.{tail}"
    raise ValueError(f"{key!r} is not a key of torchvision's R(2+1)D layout")


_TORCHVISION_MODULES = {"avgpool": "pool", "fc": "head",
                        **{f"layer{i}": f"stages.{i - 1}" for i in range(1, 5)}}


def module_name(name: str) -> str:
    """A module path in this network, also given by its torchvision name (``avgpool``,
    ``layer4.1``, ``fc``)."""
    head, dot, rest = name.partition(".")
    return _TORCHVISION_MODULES.get(head, head) + dot + rest


def is_torchvision_layout(state_dict: dict[str, torch.Tensor]) -> bool:
    """Whether keys look like torchvision's ``r2plus1d_18`` (stem.0, layer1..., fc)."""
    return "fc.weight" in state_dict and any(k.startswith("layer1.0.conv1.0.0.")
                                              for k in state_dict)


def from_torchvision(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A torchvision-layout R(2+1)D state_dict with this module's key names."""
    return {_rename(k): v for k, v in state_dict.items()}


def config_from_state_dict(state_dict: dict[str, torch.Tensor], dropout: float = 0.0
                           ) -> ModelConfig:
    """The architecture a vidmon-layout state_dict was made with, read from its shapes."""
    try:
        num_classes = state_dict["head.weight"].shape[0]
        stem_width = state_dict["stem.1.weight"].shape[0]
        stages = sorted({int(k.split(".")[1]) for k in state_dict if k.startswith("stages.")})
        widths, blocks = [], []
        for stage in stages:
            ids = {int(k.split(".")[2]) for k in state_dict if k.startswith(f"stages.{stage}.")}
            widths.append(state_dict[f"stages.{stage}.0.bn1.weight"].shape[0])
            blocks.append(len(ids))
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(f"not an R(2+1)D state_dict: missing {exc}") from None
    return ModelConfig(num_classes=int(num_classes), stem_width=int(stem_width),
                       widths=tuple(int(w) for w in widths), blocks=tuple(blocks),
                       dropout=dropout)
