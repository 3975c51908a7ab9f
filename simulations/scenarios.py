"""Drift scenarios: named, composable changes to production traffic, with onset and ramp.

A scenario changes what the camera records (a :class:`SimClip`'s frames, frame rate and
true label), whether an event is of a class the model never saw, or which classes occur. Its strength ramps from 0 at ``onset`` to 1 at ``onset + ramp`` (in
simulated hours). A new scenario is a small subclass registered with :func:`scenario`;
the simulator only calls the hooks below, so it never changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from training.corruptions import add_noise, box_blur, occlude, shake, shift_brightness
from training.synthetic import CLASS_NAMES, NOVEL_CLASSES

SCENARIOS: dict[str, type["Scenario"]] = {}


def scenario(name: str) -> Callable[[type["Scenario"]], type["Scenario"]]:
    """Register a scenario class under ``name``."""
    def register(cls: type[Scenario]) -> type[Scenario]:
        cls.name = name
        SCENARIOS[name] = cls
        return cls
    return register


@dataclass(frozen=True)
class SimClip:
    """What the camera recorded: frames (T, H, W, 3), frame rate, and the true event."""

    frames: np.ndarray
    fps: float
    label: str


@dataclass(frozen=True)
class Scenario:
    """Base: no change. Subclasses override the hooks they need."""

    onset: float = 0.0
    ramp: float = 0.0
    name = "none"
    # "covariate": what the camera records changes; "concept": what it means changes, so
    # only labels reveal it.
    kind = "covariate"

    def strength(self, hour: float) -> float:
        """0 before the onset, rising linearly to 1 over the ramp."""
        if hour < self.onset:
            return 0.0
        return 1.0 if self.ramp <= 0 else min(1.0, (hour - self.onset) / self.ramp)

    def label_weights(self, classes: tuple[str, ...], hour: float) -> np.ndarray | None:
        """Relative frequency of each class at ``hour`` (None: unchanged)."""
        return None

    def draws_novel(self, rng: np.random.Generator, hour: float) -> bool:
        """Whether this event is of a class the model never saw."""
        return False

    def transform(self, clip: SimClip, rng: np.random.Generator, hour: float) -> SimClip:
        """The clip as this scenario's camera records it at ``hour``."""
        return clip

    def __add__(self, other: "Scenario") -> "Composite":
        return Composite(parts=(self, other))


@dataclass(frozen=True)
class Composite(Scenario):
    """Several scenarios at once, each with its own onset and ramp, applied in order."""

    parts: tuple[Scenario, ...] = ()
    name = "composite"

    def label_weights(self, classes: tuple[str, ...], hour: float) -> np.ndarray | None:
        weights = None
        for part in self.parts:
            w = part.label_weights(classes, hour)
            if w is not None:
                weights = w if weights is None else weights * w
        return weights

    def draws_novel(self, rng: np.random.Generator, hour: float) -> bool:
        return any(part.draws_novel(rng, hour) for part in self.parts)

    def transform(self, clip: SimClip, rng: np.random.Generator, hour: float) -> SimClip:
        for part in self.parts:
            clip = part.transform(clip, rng, hour)
        return clip

    def __add__(self, other: Scenario) -> "Composite":
        return Composite(parts=(*self.parts, other))


@scenario("lighting")
@dataclass(frozen=True)
class Lighting(Scenario):
    """The scene gets brighter (positive ``shift``) or darker."""

    shift: float = 70.0

    def transform(self, clip: SimClip, rng: np.random.Generator, hour: float) -> SimClip:
        return replace(clip, frames=shift_brightness(clip.frames,
                                                     self.shift * self.strength(hour)))


@scenario("sensor_noise")
@dataclass(frozen=True)
class SensorNoise(Scenario):
    """Gaussian sensor noise of up to ``sigma`` grey levels."""

    sigma: float = 20.0

    def transform(self, clip: SimClip, rng: np.random.Generator, hour: float) -> SimClip:
        return replace(clip, frames=add_noise(clip.frames, self.sigma * self.strength(hour),
                                              rng))


@scenario("blur")
@dataclass(frozen=True)
class Blur(Scenario):
    """An out-of-focus lens: a box blur of up to ``radius`` pixels, applied per frame."""

    radius: int = 2

    def transform(self, clip: SimClip, rng: np.random.Generator, hour: float) -> SimClip:
        r = int(round(self.radius * self.strength(hour)))
        return clip if r == 0 else replace(clip, frames=box_blur(clip.frames, r))


@scenario("frame_rate_drop")
@dataclass(frozen=True)
class FrameRateDrop(Scenario):
    """The camera records at 1/``factor`` of its rate: every ``factor``-th frame of the
    event, at a lower fps. The service samples its frames back up, duplicating them, so
    motion comes in steps: lower motion energy, lost blinks, aliased orbits."""

    factor: int = 3

    def transform(self, clip: SimClip, rng: np.random.Generator, hour: float) -> SimClip:
        step = 1 + int(round((self.factor - 1) * self.strength(hour)))
        return replace(clip, frames=clip.frames[::step], fps=clip.fps / step)


@scenario("camera_shake")
@dataclass(frozen=True)
class CameraShake(Scenario):
    """The whole image jitters by up to ``pixels`` each frame."""

    pixels: int = 3

    def transform(self, clip: SimClip, rng: np.random.Generator, hour: float) -> SimClip:
        reach = int(round(self.pixels * self.strength(hour)))
        return clip if reach == 0 else replace(clip, frames=shake(clip.frames, reach, rng))


@scenario("occlusion")
@dataclass(frozen=True)
class Occlusion(Scenario):
    """Something dark blocks up to ``fraction`` of the view, in a random place per clip."""

    fraction: float = 0.3

    def transform(self, clip: SimClip, rng: np.random.Generator, hour: float) -> SimClip:
        return replace(clip, frames=occlude(clip.frames, self.fraction * self.strength(hour),
                                            rng))


@scenario("class_prior_shift")
@dataclass(frozen=True)
class ClassPriorShift(Scenario):
    """``favoured`` classes become ``boost`` times as frequent."""

    favoured: tuple[str, ...] = ("move_left", "steady")
    boost: float = 6.0

    def label_weights(self, classes: tuple[str, ...], hour: float) -> np.ndarray | None:
        strength = self.strength(hour)
        return np.array([1.0 + (self.boost - 1.0) * strength if c in self.favoured else 1.0
                         for c in classes])


@scenario("novel_class")
@dataclass(frozen=True)
class NovelClass(Scenario):
    """A motion never seen in training makes up to ``share`` of the traffic."""

    share: float = 0.4
    novel: str = NOVEL_CLASSES[0]

    def draws_novel(self, rng: np.random.Generator, hour: float) -> bool:
        return bool(rng.random() < self.share * self.strength(hour))


MIRRORED = {"move_left": "move_right", "move_right": "move_left",
            "orbit_cw": "orbit_ccw", "orbit_ccw": "orbit_cw"}


@scenario("mirror")
@dataclass(frozen=True)
class Mirror(Scenario):
    """Concept drift: the camera is mirrored. The true event stays, the picture flips, so
    what looks like moving left is labeled moving right. Inputs look alike; only labels
    (realized accuracy) reveal it. Applied to all traffic once past the onset (a camera
    is either mirrored or not)."""

    kind = "concept"

    def transform(self, clip: SimClip, rng: np.random.Generator, hour: float) -> SimClip:
        if self.strength(hour) <= 0:
            return clip
        return replace(clip, frames=np.ascontiguousarray(clip.frames[:, :, ::-1]))


def compose(*parts: Scenario) -> Scenario:
    """Several scenarios as one: no change for none, the scenario itself for one."""
    if not parts:
        return Scenario()
    return parts[0] if len(parts) == 1 else Composite(parts=tuple(parts))


def build(name: str, onset: float = 0.0, ramp: float = 0.0, **params: object) -> Scenario:
    """A registered scenario by name."""
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; choose from {sorted(SCENARIOS)}")
    return SCENARIOS[name](onset=onset, ramp=ramp, **params)


__all__ = ["CLASS_NAMES", "MIRRORED", "SCENARIOS", "Scenario", "SimClip", "build", "compose",
           "scenario"]
