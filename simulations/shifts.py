"""Shifts held out of every fit: how accuracy estimates are judged on data vidmon never saw.

The corruption bank (:mod:`training.corruptions`) is what a version's estimators are fitted
on; these families are never shown to them, so an estimator's error here is its error on
a shift nobody planned for. Each family records an event of the moving-shapes world the
way a changed camera or pipeline would, as a real encoded file:

- geometry: letterbox bars, crop and zoom, rotation, a horizontal flip;
- colour: hue rotation, saturation, grayscale;
- time: faster playback, reversed playback, dropped frames;
- codec and resolution: other encoders at low quality, smaller and larger sources;
- real re-encodes: generations of lossy re-encoding and rescaling, as re-uploads do.

Labels say what the video shows, as a labeling team watching it would: a flipped clip of a
shape moving left shows it moving right, a reversed one of a shape growing shows it
shrinking. These are covariate shifts (what a clip looks like moved, its meaning did
not); the concept drift case, a mirrored camera whose events keep their old labels, is the
``mirror`` scenario, where no label-free method can see the change.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from training.corruptions import to_uint8
from training.synthetic import ClipSpec, generate_named_clip

MIRRORED = {"move_left": "move_right", "move_right": "move_left",
            "orbit_cw": "orbit_ccw", "orbit_ccw": "orbit_cw"}
REVERSED = {**MIRRORED, "move_up": "move_down", "move_down": "move_up",
            "grow": "shrink", "shrink": "grow"}


@dataclass(frozen=True)
class Recording:
    """An event as the changed camera filed it: the encoded file and its true label."""

    data: bytes
    label: str


Render = Callable[[str, np.random.Generator, ClipSpec, float, float], Recording]


@dataclass(frozen=True)
class Shift:
    """One held-out family: its group, its levels (mildest first) and how it records."""

    name: str
    group: str
    levels: tuple[float, ...]
    render: Render


def encode(frames: np.ndarray, fps: float, codec: str = "libx264", *,
           options: dict[str, str] | None = None, container: str = "mp4") -> bytes:
    """Frames (T, H, W, 3) as a video file in memory (even sizes are padded by edges)."""
    t, h, w = frames.shape[:3]
    frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container) as out:
        stream = out.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        stream.options = options or ({"crf": "18", "preset": "veryfast"}
                                     if codec == "libx264" else {})
        for frame in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())
    return buffer.getvalue()


def decode(data: bytes) -> np.ndarray:
    """Every frame of an encoded file as RGB."""
    with av.open(io.BytesIO(data)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def resize(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of every frame (numpy only)."""
    t, h, w = frames.shape[:3]
    ys = np.clip((np.arange(height) + 0.5) * h / height - 0.5, 0, h - 1)
    xs = np.clip((np.arange(width) + 0.5) * w / width - 0.5, 0, w - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy, fx = (ys - y0)[None, :, None, None], (xs - x0)[None, None, :, None]
    f = frames.astype(np.float32)
    top = f[:, y0][:, :, x0] * (1 - fx) + f[:, y0][:, :, x1] * fx
    bottom = f[:, y1][:, :, x0] * (1 - fx) + f[:, y1][:, :, x1] * fx
    return to_uint8(top * (1 - fy) + bottom * fy)


def _pixels(change: Callable[[np.ndarray, float, np.random.Generator], np.ndarray],
            relabel: dict[str, str] | None = None) -> Render:
    """A family that changes the recorded pixels (and, for ``relabel``, what they show)."""
    def render(label: str, rng: np.random.Generator, spec: ClipSpec, fps: float,
               level: float) -> Recording:
        frames = change(generate_named_clip(label, rng, spec), level, rng)
        return Recording(encode(frames, fps), (relabel or {}).get(label, label))
    return render


def letterbox(frames: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    """The picture squeezed between black bars covering ``share`` of the height."""
    t, h, w = frames.shape[:3]
    inner = max(2, int(round(h * (1 - share))))
    out = np.zeros_like(frames)
    top = (h - inner) // 2
    out[:, top:top + inner] = resize(frames, inner, w)
    return out


def crop_zoom(frames: np.ndarray, zoom: float, rng: np.random.Generator) -> np.ndarray:
    """The centre 1/``zoom`` of the view, scaled back up."""
    t, h, w = frames.shape[:3]
    ch, cw = max(2, int(round(h / zoom))), max(2, int(round(w / zoom)))
    top, left = (h - ch) // 2, (w - cw) // 2
    return resize(frames[:, top:top + ch, left:left + cw], h, w)


def rotate(frames: np.ndarray, degrees: float, rng: np.random.Generator) -> np.ndarray:
    """The camera turned by ``degrees`` (nearest pixel, edges repeated)."""
    t, h, w = frames.shape[:3]
    angle = np.deg2rad(degrees)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    sy = np.clip(np.rint(cy + (yy - cy) * np.cos(angle) - (xx - cx) * np.sin(angle)), 0, h - 1)
    sx = np.clip(np.rint(cx + (yy - cy) * np.sin(angle) + (xx - cx) * np.cos(angle)), 0, w - 1)
    return frames[:, sy.astype(int), sx.astype(int)]


def hue(frames: np.ndarray, degrees: float, rng: np.random.Generator) -> np.ndarray:
    """Hue rotated by ``degrees`` about the grey axis (luma kept)."""
    angle = np.deg2rad(degrees)
    c, s = np.cos(angle), np.sin(angle)
    third, root = 1 / 3, np.sqrt(1 / 3)
    matrix = np.array([
        [c + (1 - c) * third, third * (1 - c) - root * s, third * (1 - c) + root * s],
        [third * (1 - c) + root * s, c + third * (1 - c), third * (1 - c) - root * s],
        [third * (1 - c) - root * s, third * (1 - c) + root * s, c + third * (1 - c)]])
    return to_uint8(frames.astype(np.float32) @ matrix.T.astype(np.float32))


def saturation(frames: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    """Colours pulled towards (factor < 1) or pushed from each pixel's grey."""
    x = frames.astype(np.float32)
    grey = x @ np.array([0.299, 0.587, 0.114], np.float32)
    return to_uint8(grey[..., None] + (x - grey[..., None]) * factor)


def grayscale(frames: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    """``share`` of the colour removed (1: a monochrome camera)."""
    return saturation(frames, 1.0 - share, rng)


def flip(frames: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    """A horizontally mirrored picture."""
    return np.ascontiguousarray(frames[:, :, ::-1])


def reverse(frames: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    """The clip played backwards."""
    return np.ascontiguousarray(frames[::-1])


def _speed(label: str, rng: np.random.Generator, spec: ClipSpec, fps: float,
           factor: float) -> Recording:
    """The event plays ``factor`` times as fast: the same motion over fewer frames."""
    step = int(factor)
    long = ClipSpec(spec.frames * step, spec.height, spec.width)
    return Recording(encode(generate_named_clip(label, rng, long)[::step], fps), label)


def _dropped(label: str, rng: np.random.Generator, spec: ClipSpec, fps: float,
             share: float) -> Recording:
    """A camera that loses ``share`` of its frames at random, filed at its nominal rate."""
    frames = generate_named_clip(label, rng, spec)
    keep = np.sort(rng.permutation(len(frames))[:max(2, int(round(len(frames) * (1 - share))))])
    return Recording(encode(frames[keep], fps), label)


def _codec(codec: str, container: str, options: Callable[[float], dict[str, str]]
           ) -> Render:
    """Another encoder at a low quality ``level`` (in its own units)."""
    def render(label: str, rng: np.random.Generator, spec: ClipSpec, fps: float,
               level: float) -> Recording:
        return Recording(encode(generate_named_clip(label, rng, spec), fps, codec,
                                options=options(level), container=container), label)
    return render


def _resolution(label: str, rng: np.random.Generator, spec: ClipSpec, fps: float,
                scale: float) -> Recording:
    """A camera of ``scale`` times the resolution (the service resizes to the card)."""
    frames = generate_named_clip(label, rng, spec)
    size = (max(4, int(round(spec.height * scale))), max(4, int(round(spec.width * scale))))
    return Recording(encode(resize(frames, *size), fps), label)


def _reencoded(label: str, rng: np.random.Generator, spec: ClipSpec, fps: float,
               generations: float) -> Recording:
    """Re-uploaded ``generations`` times: each time scaled to 3/4, re-encoded at a
    platform's rate factor and scaled back up by the next viewer."""
    data = encode(generate_named_clip(label, rng, spec), fps)
    for _ in range(int(generations)):
        frames = decode(data)
        h, w = frames.shape[1:3]
        small = resize(frames, max(4, int(h * 0.75)), max(4, int(w * 0.75)))
        data = encode(resize(decode(encode(small, fps, options={"crf": "30",
                                                                 "preset": "veryfast"})),
                             h, w), fps, options={"crf": "28", "preset": "veryfast"})
    return Recording(data, label)


HELD_OUT: dict[str, Shift] = {s.name: s for s in (
    Shift("letterbox", "geometry", (0.25, 0.45), _pixels(letterbox)),
    Shift("crop_zoom", "geometry", (1.3, 1.7), _pixels(crop_zoom)),
    Shift("rotation", "geometry", (15.0, 30.0), _pixels(rotate)),
    Shift("flip", "geometry", (1.0,), _pixels(flip, MIRRORED)),
    Shift("hue", "colour", (60.0, 150.0), _pixels(hue)),
    Shift("saturation", "colour", (0.4, 2.5), _pixels(saturation)),
    Shift("grayscale", "colour", (1.0,), _pixels(grayscale)),
    Shift("speed", "time", (2.0, 3.0), _speed),
    Shift("reverse", "time", (1.0,), _pixels(reverse, REVERSED)),
    Shift("dropped_frames", "time", (0.3, 0.6), _dropped),
    # MPEG-4 part 2 at a fixed quantiser (2-31, higher is coarser); VP9 at a rate factor
    Shift("mpeg4", "codec", (16.0, 31.0),
          _codec("mpeg4", "avi", lambda q: {"qmin": str(int(q)), "qmax": str(int(q))})),
    Shift("vp9", "codec", (50.0, 63.0),
          _codec("libvpx-vp9", "webm",
                 lambda crf: {"crf": str(int(crf)), "b:v": "0", "deadline": "realtime"})),
    Shift("low_resolution", "resolution", (0.5, 0.375), _resolution),
    Shift("high_resolution", "resolution", (2.0,), _resolution),
    Shift("reencoded", "re-encode", (2.0, 4.0), _reencoded),
)}
