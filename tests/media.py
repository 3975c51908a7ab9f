"""Real media files for tests, written with PyAV."""

from __future__ import annotations

import io
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
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


def npy_bytes(array: np.ndarray, fortran: bool = False) -> bytes:
    """An array in .npy format (Fortran-ordered when asked, as numpy writes such arrays)."""
    buffer = io.BytesIO()
    np.save(buffer, np.asfortranarray(array) if fortran else array, allow_pickle=False)
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


COLOURS = {"red": (200, 40, 40), "green": (40, 190, 60), "blue": (40, 60, 210)}


def colour_clip(label: str, rng: np.random.Generator, frames: int, height: int, width: int
                ) -> np.ndarray:
    """A scene whose class is the colour of a square drifting over a textured background:
    learnable in a few steps by any small network, unlike the motion classes."""
    background = rng.integers(60, 160, size=(1, height, width, 3)).astype(np.float32)
    clip = np.repeat(background, frames, axis=0)
    side = max(4, min(height, width) // 3)
    y, x = rng.integers(0, height - side), rng.integers(0, width - side)
    dy, dx = rng.integers(-1, 2, size=2)
    for t in range(frames):
        top = int(np.clip(y + dy * t, 0, height - side))
        left = int(np.clip(x + dx * t, 0, width - side))
        clip[t, top:top + side, left:left + side] = COLOURS[label]
    clip += rng.normal(0, 4, size=clip.shape)
    return np.clip(clip, 0, 255).astype(np.uint8)


def write_colour_dataset(root: Path, per_class: int, *, frames: int = 24, height: int = 40,
                         width: int = 48, fps: float = 16.0, seed: int = 0) -> Path:
    """A folder-per-class dataset of real mp4 files: ``root/<colour>/<i>.mp4``."""
    rng = np.random.default_rng(seed)
    for label in COLOURS:
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            write_video(colour_clip(label, rng, frames, height, width), root / label / f"{i}.mp4",
                        fps=fps)
    return root


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def ffmpeg_stream(path: Path, port: int, loops: int = 0, again: bool = False
                  ) -> Iterator[None]:
    """FFmpeg serving ``path`` in real time as MPEG-TS over HTTP on 127.0.0.1:port, to one
    client at a time (started again for the next client with ``again``); killed on exit."""
    command = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-stream_loop",
               str(loops), "-i", str(path), "-c", "copy", "-f", "mpegts", "-listen", "1",
               f"http://127.0.0.1:{port}/live.ts"]
    stop = threading.Event()
    current: list[subprocess.Popen] = []

    def serve() -> None:
        while not stop.is_set():
            current.append(subprocess.Popen(command, stdin=subprocess.DEVNULL))
            while current[-1].poll() is None and not stop.is_set():
                time.sleep(0.05)
            if not again:
                return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)
        for process in current:
            process.kill()
            process.wait(10)
