"""Inputs meant to hurt the service get a clear 4xx that names the limit, cost little, change
nothing; the few failures left are counted, and no error body repeats its input."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from monitor.settings import ServeSettings, Settings
from monitor.store import PredictionRepository, create_store_engine
from serving.app import create_app
from serving.background import running_server
from tests.media import npy_bytes, sample_clip, video_bytes
from training.registry import RegistrySource
from training.synthetic import ClipSpec

KEY = "hostile-key"
LIMIT = 300_000


@pytest.fixture
def service(model_store: Settings, tmp_path: Path
            ) -> Iterator[tuple[httpx.Client, PredictionRepository, object]]:
    from pydantic import SecretStr

    settings = model_store.model_copy(update={
        "database_url": f"sqlite:///{tmp_path / 'vidmon.db'}", "clip_dir": tmp_path / "clips",
        "admin_key": SecretStr(KEY),
        "serve": ServeSettings(max_request_bytes=LIMIT, max_upload_bytes=LIMIT,
                               max_body_bytes=20_000, spool_path=tmp_path / "spool.jsonl",
                               max_decoded_pixels=64 * 64 * 100)})
    app = create_app(settings, RegistrySource(settings))
    engine = create_store_engine(settings.database_url)
    with running_server(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        yield client, PredictionRepository(engine), app
    engine.dispose()


def test_a_body_over_the_limit_is_refused_from_its_declared_length(service) -> None:
    client, repository, _ = service
    body = b"x" * (LIMIT + 1)
    response = client.post("/v1/predict", content=body,
                           headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert response.status_code == 413
    assert f"limit of {LIMIT} bytes" in response.json()["detail"]
    assert repository.count() == 0


def test_a_streamed_body_is_cut_off_once_it_passes_the_limit(service) -> None:
    client, repository, _ = service
    sent = 0

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer encoding
        nonlocal sent
        yield b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"c.npy\"\r\n"
        yield b"Content-Type: application/x-npy\r\n\r\n"
        for _ in range(200):
            sent += 65536
            yield b"\0" * 65536
    try:
        response = client.post("/v1/predict", content=chunks(),
                               headers={"Content-Type": "multipart/form-data; boundary=b"})
    except httpx.HTTPError:
        pass  # the server may close the connection before the client finishes sending
    else:
        assert response.status_code == 413, response.text
        assert "over the limit" in response.json()["detail"]
    assert repository.count() == 0
    assert client.get("/healthz").status_code == 200


def test_feedback_has_a_body_limit_and_its_errors_never_echo_the_input(service) -> None:
    client, _, _ = service
    huge = {"labels": [{"prediction_id": "a" * 32, "label": "x" * 25_000}]}
    assert client.post("/v1/feedback", json=huge).status_code == 413
    invalid = client.post("/v1/feedback", json={"labels": [{"prediction_id": "b" * 5000,
                                                            "label": "steady"}]})
    assert invalid.status_code == 422
    assert invalid.json()["error"] == "InvalidInput" and "b" * 100 not in invalid.text
    assert len(invalid.content) < 2000


def test_out_of_range_pagination_and_oversized_ids_are_422(service) -> None:
    client, _, _ = service
    assert client.get("/v1/reports", params={"offset": 9223372036854775808}).status_code == 422
    assert client.get("/v1/reports", params={"offset": 10_000_001}).status_code == 422
    assert client.get(f"/v1/reports/{'r' * 100}").status_code == 422


def test_a_video_over_the_decoded_pixel_limit_is_refused_naming_it(service) -> None:
    client, repository, _ = service
    data = video_bytes(".mp4", frames=120, size=64)
    response = client.post("/v1/predict", files={"file": ("long.mp4", data, "video/mp4")})
    assert response.status_code == 413
    assert "max_decoded_pixels" in response.json()["detail"]
    assert repository.count() == 0


def test_asking_twice_for_a_retrain_queues_one(service) -> None:
    client, _, _ = service
    auth = {"Authorization": f"Bearer {KEY}"}
    first = client.post("/v1/admin/retrain", headers=auth).json()
    second = client.post("/v1/admin/retrain", headers=auth).json()
    assert first["decision_id"] == second["decision_id"]
    assert first["queued"] and not second["queued"]


def test_a_server_error_is_answered_plainly_and_counted(service, monkeypatch) -> None:
    client, _, app = service

    async def broken(*_args, **_kwargs):  # a fault no input can cause: a bug, simulated
        raise RuntimeError("internal state <object at 0xdeadbeef>")
    monkeypatch.setattr(app.state.service, "predict", broken)
    clip = npy_bytes(sample_clip(spec=ClipSpec(16, 32, 32)))
    response = client.post("/v1/predict", files={"file": ("c.npy", clip, "application/x-npy")})
    assert response.status_code == 500
    assert response.json() == {"error": "InternalError",
                               "detail": "internal error; the server log has the details"}
    assert 'route="/v1/predict",status="500"' in client.get("/metrics").text


def test_a_chunked_raw_body_over_the_upload_limit_is_refused_without_reading_the_rest(
        model_store: Settings, tmp_path: Path) -> None:
    """The raw-body path holds uploads to max_upload_bytes, below the request limit a batch
    needs; past it the answer is 413 and the connection closes, so the rest of a 1 GB
    chunked body is never read (it was: 2.8 s of reading before the 413)."""
    settings = model_store.model_copy(update={
        "database_url": f"sqlite:///{tmp_path / 'vidmon.db'}", "clip_dir": tmp_path / "clips",
        "serve": ServeSettings(max_upload_bytes=LIMIT, max_request_bytes=100 * LIMIT,
                               spool_path=tmp_path / "spool.jsonl")})
    sent = 0
    total = 1 << 30

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer encoding
        nonlocal sent
        block = b"\0" * (1 << 20)
        while sent < total:
            sent += len(block)
            yield block

    app = create_app(settings, RegistrySource(settings))
    with running_server(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        try:
            response = client.post("/v1/predict", content=chunks(),
                                   headers={"Content-Type": "application/x-npy"})
        except httpx.HTTPError:
            response = None  # closed while the client was still sending: what we want
        if response is not None:
            assert response.status_code == 413, response.text
            assert "max_upload_bytes" in response.json()["detail"]
            assert response.headers["connection"] == "close"
        assert sent < 64 << 20, f"the server read {sent >> 20} MB of a refused body"
        assert client.get("/healthz").status_code == 200


def test_a_frame_over_the_pixel_limit_is_refused_from_the_header_before_any_decoding(
        tmp_path: Path) -> None:
    """An 8192 x 8192 one-frame video cost 1.5 s and +139 MB (FFmpeg's probe decoded the
    frame) before its 413; the limit reaches the probe's decoder, so now it costs neither."""
    import subprocess
    import sys

    import av
    import numpy as np

    path = tmp_path / "huge.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width = stream.height = 8192
        stream.pix_fmt, stream.options = "yuv420p", {"preset": "ultrafast"}
        frame = av.VideoFrame.from_ndarray(np.zeros((8192, 8192, 3), np.uint8), format="rgb24")
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    # VmHWM, the peak of this process's own memory (ru_maxrss would carry pytest's over exec).
    probe = f"""
import re
from pathlib import Path
from monitor.errors import PayloadTooLarge
from monitor.video import DecodeLimits, decode_video
from tests.conftest import synthetic_card
from tests.media import video_bytes
from monitor.settings import TrainSettings
card, limits = synthetic_card(TrainSettings()), DecodeLimits()
decode_video(video_bytes(".mp4"), card, limits)  # libraries loaded, threads started
def peak_kb():
    return int(re.search(r"VmHWM:\\s+(\\d+)", Path("/proc/self/status").read_text()).group(1))
before = peak_kb()
try:
    decode_video(open({str(path)!r}, "rb").read(), card, limits)
except PayloadTooLarge as exc:
    print(exc)
print((peak_kb() - before) / 1024)
"""
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", probe], cwd=root, capture_output=True,
                            text=True, timeout=120, check=True)
    message, grown_mb = result.stdout.strip().splitlines()
    assert "8192x8192" in message and "max_frame_pixels" in message
    assert float(grown_mb) < 64, f"refusing the frame cost {grown_mb} MB of memory"
