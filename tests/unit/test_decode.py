"""Decoding uploads into model-sized clips, and rejecting bad ones clearly."""

from __future__ import annotations

import numpy as np
import pytest

from monitor.errors import InvalidInput, UnsupportedMediaType
from monitor.card import ModelCard
from serving.decode import decode_upload
from training.synthetic import ClipSpec
from tests.media import audio_only_wav, npy_bytes, sample_clip, video_bytes

SIZE = ModelCard(labels=("a", "b"), frames=16, height=32, width=32)


@pytest.mark.parametrize(("suffix", "content_type", "codec"), [
    (".mp4", "video/mp4", "h264"), (".webm", "video/webm", "vp9"),
    (".avi", "video/x-msvideo", "mpeg4"), (".mkv", "video/x-matroska", "h264"),
    (".mov", "video/quicktime", "h264"), (".gif", "image/gif", "gif"),
])
def test_video_files_decode_to_the_model_input(suffix: str, content_type: str, codec: str) -> None:
    data = video_bytes(suffix, frames=24, size=64, fps=12.0)
    decoded = decode_upload(data, f"clip{suffix}", content_type, SIZE)
    assert decoded.video.clips[0].shape == (16, 32, 32, 3) and decoded.video.clips.dtype == np.uint8
    assert decoded.video.codec == codec
    assert decoded.video.meta is not None
    assert (decoded.video.meta.width, decoded.video.meta.height) == (64, 64)
    assert decoded.video.meta.frame_count == 24
    assert decoded.video.meta.fps == pytest.approx(12.0, rel=0.1)
    assert decoded.size_bytes == len(data)


def test_raw_clips_are_resized_in_space_and_sampled_in_time() -> None:
    clip = sample_clip(spec=ClipSpec(20, 64, 48))
    decoded = decode_upload(npy_bytes(clip), "clip.npy", "application/x-npy", SIZE)
    assert decoded.video.clips[0].shape == (16, 32, 32, 3)
    assert decoded.video.meta is None and decoded.video.codec is None
    same = decode_upload(npy_bytes(clip[:16, :32, :32]), "c.npy", "application/octet-stream", SIZE)
    np.testing.assert_array_equal(same.video.clips[0], clip[:16, :32, :32])


@pytest.mark.parametrize(("data", "filename", "content_type", "error", "message"), [
    (b"", "a.mp4", "video/mp4", InvalidInput, "empty"),
    (b"definitely not a video" * 50, "a.mp4", "video/mp4", InvalidInput, "not a readable video"),
    (b"hello", "a.txt", "text/plain", UnsupportedMediaType, "unsupported content type"),
    (audio_only_wav(), "a.wav", "video/x-wav", InvalidInput, "no video stream"),
    (npy_bytes(np.zeros((4, 8, 8), np.uint8)), "c.npy", "application/x-npy", InvalidInput,
     r"shape \(T, H, W, 3\)"),
    (npy_bytes(np.zeros((4, 8, 8, 3), np.float32)), "c.npy", "application/x-npy", InvalidInput,
     "must be uint8"),
    (npy_bytes(np.full((4, 8, 8, 3), np.nan, np.float32)), "c.npy", "application/x-npy",
     InvalidInput, "NaN"),
    (npy_bytes(np.zeros((4, 8, 8, 3), np.uint8)), "c.npy", "video/mp4", UnsupportedMediaType,
     "application/x-npy"),
    (b"\x93NUMPY garbage", "c.npy", "application/x-npy", InvalidInput, "not a readable .npy"),
])
def test_bad_uploads_raise_clear_domain_errors(
    data: bytes, filename: str, content_type: str, error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        decode_upload(data, filename, content_type, SIZE)


def test_a_truncated_video_is_rejected_or_keeps_the_frames_that_decoded() -> None:
    data = video_bytes(".mp4", frames=24)
    try:
        decoded = decode_upload(data[: len(data) // 2], "cut.mp4", "video/mp4", SIZE)
    except InvalidInput as exc:
        assert "video" in str(exc)
    else:
        assert decoded.video.clips[0].shape == (16, 32, 32, 3)
        assert decoded.video.meta is not None and decoded.video.meta.frame_count < 24
