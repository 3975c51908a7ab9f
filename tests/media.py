"""Real media files for tests, written with PyAV."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np

from training.synthetic import CLASS_NAMES, ClipSpec, generate_clip
from training.video_io import write_video


CAMERA = ClipSpec(16, 64, 64)


def sample_clip(label: str = "move_right", seed: int = 0, spec: ClipSpec = CAMERA) -> np.ndarray:
    """A generated uint8 clip of one class."""
    return generate_clip(CLASS_NAMES.index(label), np.random.default_rng(seed), spec)


def video_bytes(suffix: str, frames: int = 24, size: int = 64, fps: float = 12.0) -> bytes:
    """A real encoded video of a moving shape, as bytes."""
    clip = sample_clip(spec=ClipSpec(frames, size, size))
    path = Path(write_video(clip, Path(_tmpdir()) / f"clip{suffix}", fps=fps))
    return path.read_bytes()


def npy_bytes(array: np.ndarray) -> bytes:
    """An array in .npy format."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def audio_only_wav() -> bytes:
    """A WAV file with one audio stream and no video."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="wav") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), dtype=np.int16), format="s16",
                                           layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


def _tmpdir() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="vidmon-media-")
