"""The model card: what a video classifier expects, beside its weights.

A card says which labels the model's outputs mean, the clip it takes (frames, height,
width), how a video becomes that clip (resize mode, temporal sampling), how pixels are
normalised, and where the embedding comes from. Serving, profiling and training all
preprocess through :mod:`monitor.preprocess`, driven by the card, so the three never
disagree. Plain dataclasses (no pydantic) keep this importable with torch alone.

A card file is YAML or JSON::

    labels: [abseiling, air_drumming, ...]
    frames: 16
    height: 112
    width: 112
    mean: [0.43216, 0.394666, 0.37645]     # per channel, on 0-1 pixels
    std: [0.22803, 0.22145, 0.216989]
    resize: {short_side: 128}               # or: stretch
    sampling: {fps: 15, stride: 2}          # or: uniform
    embedding_layer: avgpool                # a module name, for a model returning logits only
    embedding_method: embed                 # TorchScript: a method mapping input to embedding
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)
_FIELDS = {"labels", "frames", "height", "width", "mean", "std", "resize", "sampling",
           "embedding_layer", "embedding_method", "name"}


class CardError(ValueError):
    """A card with a missing, malformed or contradictory field."""


@dataclass(frozen=True)
class ModelCard:
    """The input contract of one model version."""

    labels: tuple[str, ...]
    frames: int
    height: int
    width: int
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    short_side: int | None = None  # None: stretch to height x width
    sampling_fps: float | None = None  # None: uniform over the whole video
    stride: int = 1
    embedding_layer: str | None = None
    embedding_method: str | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        _check(len(self.labels) >= 2, "labels", "needs at least 2 class names")
        _check(len(set(self.labels)) == len(self.labels), "labels", "has duplicate names")
        _check(all(isinstance(x, str) and x for x in self.labels), "labels",
               "must be non-empty strings")
        for key in ("frames", "height", "width"):
            value = getattr(self, key)
            _check(isinstance(value, int) and value >= 1, key, f"must be a positive integer, "
                                                                f"got {value!r}")
        _check(min(self.height, self.width) >= 3, "height/width", "must be at least 3 pixels")
        for key in ("mean", "std"):
            value = getattr(self, key)
            _check(len(value) == 3 and all(math.isfinite(v) for v in value), key,
                   "must be 3 finite numbers (one per RGB channel, on 0-1 pixels)")
        _check(all(s > 0 for s in self.std), "std", "must be positive")
        if self.short_side is not None:
            _check(self.short_side >= max(self.height, self.width), "resize.short_side",
                   f"{self.short_side} is smaller than the {self.height}x{self.width} "
                   "centre crop it must contain")
        if self.sampling_fps is not None:
            _check(self.sampling_fps > 0, "sampling.fps", "must be positive")
            _check(self.stride >= 1, "sampling.stride", "must be at least 1")
        _check(not (self.embedding_layer and self.embedding_method), "embedding_layer",
               "and embedding_method are two answers to one question; give one")

    @property
    def resize(self) -> str:
        """``stretch`` or ``short_side``."""
        return "stretch" if self.short_side is None else "short_side"

    @property
    def sampling(self) -> str:
        """``uniform`` or ``stride``."""
        return "uniform" if self.sampling_fps is None else "stride"

    @property
    def clip_shape(self) -> tuple[int, int, int, int]:
        """(T, H, W, 3) of the uint8 clip the model's preprocessing produces."""
        return (self.frames, self.height, self.width, 3)

    def same_input(self, other: "ModelCard") -> bool:
        """Whether two cards turn a video into the same clip (a hot swap keeps decoding)."""
        keys = ("frames", "height", "width", "short_side", "sampling_fps", "stride")
        return all(getattr(self, k) == getattr(other, k) for k in keys)

    def to_dict(self) -> dict[str, Any]:
        """The card in its file form."""
        data: dict[str, Any] = {
            "labels": list(self.labels), "frames": self.frames, "height": self.height,
            "width": self.width, "mean": list(self.mean), "std": list(self.std),
            "resize": "stretch" if self.short_side is None else {"short_side": self.short_side},
            "sampling": "uniform" if self.sampling_fps is None
            else {"fps": self.sampling_fps, "stride": self.stride},
            "embedding_layer": self.embedding_layer, "embedding_method": self.embedding_method,
        }
        if self.name:
            data["name"] = self.name
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, labels: tuple[str, ...] | None = None
                  ) -> "ModelCard":
        """Parse the file form; ``labels`` fills a card that leaves them to the dataset."""
        if not isinstance(data, dict):
            raise CardError(f"a card is a mapping of fields, got {type(data).__name__}")
        unknown = sorted(set(data) - _FIELDS)
        _check(not unknown, "card", f"has unknown fields {unknown}; known: {sorted(_FIELDS)}")
        raw_labels = data.get("labels", labels)
        _check(raw_labels is not None, "labels", "is missing")
        _check(isinstance(raw_labels, (list, tuple)), "labels", "must be a list")
        for key in ("frames", "height", "width"):
            _check(key in data, key, "is missing")
        short_side, fps, stride = _resize(data.get("resize", "stretch")), None, 1
        sampling = data.get("sampling", "uniform")
        if sampling != "uniform":
            _check(isinstance(sampling, dict) and set(sampling) <= {"fps", "stride", "mode"}
                   and "fps" in sampling, "sampling",
                   "must be 'uniform' or {fps: <frames per second>, stride: <frames>}")
            _check(sampling.get("mode", "stride") == "stride", "sampling.mode",
                   "must be 'stride' when fps is given")
            fps = _number(sampling["fps"], "sampling.fps")
            stride = _integer(sampling.get("stride", 1), "sampling.stride")
        try:
            return cls(
                labels=tuple(str(x) for x in raw_labels),
                frames=_integer(data["frames"], "frames"),
                height=_integer(data["height"], "height"),
                width=_integer(data["width"], "width"),
                mean=_triple(data.get("mean", (0.0, 0.0, 0.0)), "mean"),
                std=_triple(data.get("std", (1.0, 1.0, 1.0)), "std"),
                short_side=short_side, sampling_fps=fps, stride=stride,
                embedding_layer=data.get("embedding_layer") or None,
                embedding_method=data.get("embedding_method") or None,
                name=data.get("name"))
        except TypeError as exc:
            raise CardError(f"card: {exc}") from None


def load_card(path: str | Path, *, labels: tuple[str, ...] | None = None) -> ModelCard:
    """Read a YAML or JSON card file; errors name the file and the field."""
    path = Path(path)
    if not path.is_file():
        raise CardError(f"no card file at {path}")
    text = path.read_text()
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # noqa: BLE001 - any parse error is the file's fault
        raise CardError(f"{path} is not valid {path.suffix.lstrip('.') or 'YAML'}: {exc}") from None
    try:
        return ModelCard.from_dict(data, labels=labels)
    except CardError as exc:
        raise CardError(f"{path}: {exc}") from None


def _check(ok: bool, field: str, message: str) -> None:
    if not ok:
        raise CardError(f"card field '{field}' {message}")


def _integer(value: Any, field: str) -> int:
    _check(isinstance(value, int) and not isinstance(value, bool), field,
           f"must be an integer, got {value!r}")
    return int(value)


def _number(value: Any, field: str) -> float:
    _check(isinstance(value, (int, float)) and not isinstance(value, bool), field,
           f"must be a number, got {value!r}")
    return float(value)


def _triple(value: Any, field: str) -> tuple[float, float, float]:
    _check(isinstance(value, (list, tuple)) and len(value) == 3, field,
           f"must be a list of 3 numbers, got {value!r}")
    return tuple(_number(v, field) for v in value)  # type: ignore[return-value]


def _resize(value: Any) -> int | None:
    if value == "stretch":
        return None
    _check(isinstance(value, dict) and "short_side" in value
           and set(value) <= {"short_side", "mode"}, "resize",
           "must be 'stretch' or {short_side: <pixels>} (then a centre crop to height x width)")
    return _integer(value["short_side"], "resize.short_side")
