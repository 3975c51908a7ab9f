"""Procedural "moving shapes" action videos.

Each class is defined by how a shape changes over time (direction of travel, sense of
rotation around an orbit, growing or shrinking, blinking), never by what one frame shows: shape, colour,
size, speed, position and background texture are drawn at random for every clip.
Generation is deterministic for a seed and vectorised over frames with numpy.
"""

from __future__ import annotations

import csv
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from monitor.commands import vidmon_command
from monitor.objects import is_remote
from monitor.objects.mirror import upload_folder
from training.video_io import write_video

if TYPE_CHECKING:
    from monitor.settings import ObjectStoreSettings

CLASS_NAMES: tuple[str, ...] = (
    "move_left",
    "move_right",
    "move_up",
    "move_down",
    "orbit_cw",
    "orbit_ccw",
    "grow",
    "shrink",
    "blink",
    "steady",
)

# Motions the classifier never sees in training, for novel-class drift in simulations.
NOVEL_CLASSES: tuple[str, ...] = ("move_diagonal",)

SHAPES: tuple[str, ...] = ("ellipse", "bar", "triangle", "square")

# Convex polygons in units of the shape's radius.
_POLYGONS: dict[str, np.ndarray] = {
    "bar": np.array([[-1.0, -0.4], [1.0, -0.4], [1.0, 0.4], [-1.0, 0.4]]),
    "triangle": np.array(
        [[np.cos(a), np.sin(a)] for a in np.deg2rad([90.0, 210.0, 330.0])]
    ),
    "square": np.array([[-0.75, -0.75], [0.75, -0.75], [0.75, 0.75], [-0.75, 0.75]]),
}


@dataclass(frozen=True)
class ClipSpec:
    """Size of generated clips: frames, height, width."""

    frames: int = 16
    height: int = 32
    width: int = 32


@dataclass(frozen=True)
class _Motion:
    """Per-frame trajectory of the shape: centre, radius, angle and visibility."""

    cx: np.ndarray
    cy: np.ndarray
    radius: np.ndarray
    angle: np.ndarray
    visible: np.ndarray


def _smooth_texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Low-frequency colour noise (h, w, 3) in [0, 1], bilinearly upsampled from a coarse grid."""
    cells = int(rng.integers(2, 7))
    grid = rng.random((cells + 1, cells + 1, 3))
    ys = np.linspace(0.0, cells, h)
    xs = np.linspace(0.0, cells, w)
    y0 = np.minimum(ys.astype(int), cells - 1)
    x0 = np.minimum(xs.astype(int), cells - 1)
    fy = (ys - y0)[:, None, None]
    fx = (xs - x0)[None, :, None]
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx
    bottom = grid[y0 + 1][:, x0] * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _motion(label: str, rng: np.random.Generator, spec: ClipSpec) -> _Motion:
    """Trajectory for one clip of class ``label``."""
    t = np.arange(spec.frames, dtype=np.float64)
    size = min(spec.height, spec.width)
    radius0 = size * rng.uniform(0.13, 0.2)
    radius = np.full_like(t, radius0)
    angle = np.full_like(t, rng.uniform(0.0, 2 * np.pi))
    visible = np.ones_like(t, dtype=bool)

    def free_position(extent: int, r: float) -> float:
        return rng.uniform(r, extent - r)

    cx = np.full_like(t, free_position(spec.width, radius0))
    cy = np.full_like(t, free_position(spec.height, radius0))

    if label == "move_diagonal":
        span = min(spec.width, spec.height) - 2 * radius0
        travel = rng.uniform(0.45, 0.9) * span
        start = rng.uniform(radius0, min(spec.width, spec.height) - radius0 - travel)
        path = start + travel / (spec.frames - 1) * t
        cx, cy = path.copy(), path.copy()
    elif label.startswith("move_"):
        axis_len = spec.width if label in ("move_left", "move_right") else spec.height
        # The whole path stays in frame; where it starts is random along the axis.
        travel = rng.uniform(0.45, 0.9) * (axis_len - 2 * radius0)
        start = rng.uniform(radius0, axis_len - radius0 - travel)
        forward = start + travel / (spec.frames - 1) * t
        path = forward if label in ("move_right", "move_down") else axis_len - forward
        if label in ("move_left", "move_right"):
            cx = path
        else:
            cy = path
    elif label.startswith("orbit_"):
        # The shape circles a hidden centre; on screen (y down) a growing angle is clockwise.
        orbit = min(size * rng.uniform(0.14, 0.22), size / 2 - radius0 - 1)
        ox = rng.uniform(orbit + radius0, spec.width - orbit - radius0)
        oy = rng.uniform(orbit + radius0, spec.height - orbit - radius0)
        omega = np.deg2rad(rng.uniform(25.0, 40.0)) * (1 if label == "orbit_cw" else -1)
        phase = rng.uniform(0.0, 2 * np.pi) + omega * t
        cx, cy = ox + orbit * np.cos(phase), oy + orbit * np.sin(phase)
    elif label in ("grow", "shrink"):
        ratio = rng.uniform(1.8, 2.6)
        small = size * rng.uniform(0.08, 0.12)
        frac = t / (spec.frames - 1)
        growth = small * ratio**frac
        radius = growth if label == "grow" else growth[::-1].copy()
        cx = np.full_like(t, free_position(spec.width, small * ratio))
        cy = np.full_like(t, free_position(spec.height, small * ratio))
    elif label == "blink":
        period = int(rng.integers(2, 5))
        phase = int(rng.integers(0, 2 * period))
        visible = ((np.arange(spec.frames) + phase) // period) % 2 == 0
    elif label != "steady":
        raise ValueError(f"unknown class {label!r}; expected one of "
                         f"{CLASS_NAMES + NOVEL_CLASSES}")
    return _Motion(cx=cx, cy=cy, radius=radius, angle=angle, visible=visible)


def _shape_masks(shape: str, motion: _Motion, spec: ClipSpec) -> np.ndarray:
    """Boolean masks (T, H, W) of the shape in every frame."""
    ys, xs = np.mgrid[0 : spec.height, 0 : spec.width].astype(np.float64) + 0.5
    dx = xs[None] - motion.cx[:, None, None]
    dy = ys[None] - motion.cy[:, None, None]
    cos = np.cos(motion.angle)[:, None, None]
    sin = np.sin(motion.angle)[:, None, None]
    r = motion.radius[:, None, None]
    u = (dx * cos + dy * sin) / r
    v = (-dx * sin + dy * cos) / r
    if shape == "ellipse":
        mask = u**2 + (v / 0.5) ** 2 <= 1.0
    else:
        poly = _POLYGONS[shape]
        mask = np.ones(u.shape, dtype=bool)
        for a, b in zip(poly, np.roll(poly, -1, axis=0)):
            edge = b - a
            mask &= edge[0] * (v - a[1]) - edge[1] * (u - a[0]) >= 0
    return mask & motion.visible[:, None, None]


def _contrasting_colour(rng: np.random.Generator, background: np.ndarray) -> np.ndarray:
    """A colour far enough from the mean background colour to stay visible."""
    mean = background.reshape(-1, 3).mean(axis=0)
    for _ in range(100):
        colour = rng.random(3)
        if np.abs(colour - mean).sum() > 0.8:
            return colour
    return 1.0 - mean


def generate_clip(label: int, rng: np.random.Generator, spec: ClipSpec = ClipSpec()) -> np.ndarray:
    """One uint8 clip (T, H, W, 3) of class index ``label``."""
    return generate_named_clip(CLASS_NAMES[label], rng, spec)


def generate_named_clip(name: str, rng: np.random.Generator, spec: ClipSpec = ClipSpec()) -> np.ndarray:
    """One uint8 clip of a class by name, novel classes included."""
    base = rng.random(3)
    texture = _smooth_texture(rng, spec.height, spec.width)
    strength = rng.uniform(0.15, 0.5)
    background = np.clip(base * (1 - strength) + texture * strength, 0.0, 1.0)
    colour = _contrasting_colour(rng, background)
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    masks = _shape_masks(shape, _motion(name, rng, spec), spec)
    frames = np.where(masks[..., None], colour, background[None])
    noise_sigma = rng.uniform(0.0, 3.0) / 255.0
    frames = frames + rng.normal(0.0, noise_sigma, size=frames.shape)
    return np.clip(frames * 255.0 + 0.5, 0, 255).astype(np.uint8)


def generate_dataset(
    clips_per_class: int, seed: int, spec: ClipSpec = ClipSpec()
) -> tuple[np.ndarray, np.ndarray]:
    """A balanced set: clips uint8 (N, T, H, W, 3) and labels int64 (N,), classes interleaved.

    Clip ``i`` has class ``i % n_classes`` and its own child seed, so it is the same clip
    whatever the size of the set.
    """
    n = clips_per_class * len(CLASS_NAMES)
    labels = np.arange(n, dtype=np.int64) % len(CLASS_NAMES)
    children = np.random.SeedSequence(seed).spawn(n)
    clips = np.empty((n, spec.frames, spec.height, spec.width, 3), dtype=np.uint8)
    for i, (label, child) in enumerate(zip(labels, children)):
        clips[i] = generate_clip(int(label), np.random.default_rng(child), spec)
    return clips, labels


def write_dataset(out: str | Path, clips_per_class: int, test_clips_per_class: int, *,
                  spec: ClipSpec = ClipSpec(), fps: float = 8.0, seed: int = 0,
                  suffix: str = ".mp4") -> Path:
    """Write a synthetic dataset of encoded video files, ``OUT/<label>/<split>-<i><suffix>``,
    and ``OUT/manifest.csv`` (path,label,split): one dataset like any other. The training
    and test clips come from different seeds. Returns the manifest's path."""
    out = Path(out)
    rows = []
    parts = (("train", clips_per_class, seed), ("test", test_clips_per_class, seed + 1))
    for split, per_class, part_seed in parts:
        clips, labels = generate_dataset(per_class, part_seed, spec)
        for i, (clip, label) in enumerate(tqdm(zip(clips, labels), total=len(clips),
                                               desc=f"writing {split} videos", unit="video",
                                               disable=None)):
            relative = Path(CLASS_NAMES[label]) / f"{split}-{i:05d}{suffix}"
            (out / relative).parent.mkdir(parents=True, exist_ok=True)
            write_video(clip, out / relative, fps=fps)
            rows.append((relative.as_posix(), CLASS_NAMES[label], split))
    manifest = out / "manifest.csv"
    partial = manifest.with_suffix(".csv.partial")
    with partial.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "split"])
        writer.writerows(rows)
    partial.replace(manifest)  # the manifest appears only once every file is written
    return manifest


def synth_command(out: str, clips_per_class: int, test_clips_per_class: int, spec: ClipSpec,
                  fps: float, seed: int, suffix: str, objects: ObjectStoreSettings) -> int:
    """``vidmon synth``: write the dataset (to a folder, or through a temp folder to
    ``s3://bucket/prefix``) and say how to train on it."""
    n = (clips_per_class + test_clips_per_class) * len(CLASS_NAMES)
    with tempfile.TemporaryDirectory(prefix="vidmon-synth-") as scratch:
        folder = Path(scratch) if is_remote(out) else Path(out)
        manifest = write_dataset(folder, clips_per_class, test_clips_per_class, spec=spec,
                                 fps=fps, seed=seed, suffix=suffix)
        if is_remote(out):
            upload_folder(folder, out, objects)
    wrote, data = (f"a manifest to {out}", out) if is_remote(out) else (manifest,
                                                                         manifest.resolve())
    print(f"wrote {n} videos of {len(CLASS_NAMES)} classes and {wrote}\n"
          f"train on it: {vidmon_command('train', '--data', data)}")
    return 0
