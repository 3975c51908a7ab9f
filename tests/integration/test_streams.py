"""Live streams: a real stream served on 127.0.0.1 by FFmpeg (HTTP MPEG-TS, in real time)
from a file whose scenes change at known times, pulled by real uvicorn servers, classified
by a model that is not vidmon's own (the colour model)."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from monitor.settings import MediaSettings, ServeSettings, Settings
from serving.app import create_app
from serving.background import running_server
from tests.colour_model import COLOUR_CARD, ColourSource, write_scenes
from tests.media import ffmpeg_stream, free_port
from tests.needs import need_programs


@pytest.fixture(autouse=True)
def _ffmpeg() -> None:
    need_programs("ffmpeg", install="apt-get install ffmpeg")


SCENES = [("red", 3.0), ("green", 4.0), ("blue", 3.0)]
CHANGES = [0.0, 3.0, 7.0]
HOP = 2  # model frames: 0.25 s at the colour card's 8 frames a second
HOP_S = HOP * COLOUR_CARD.stride / COLOUR_CARD.sampling_fps


@pytest.fixture(scope="module")
def scenes_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_scenes(tmp_path_factory.mktemp("stream") / "scenes.mp4", SCENES)


def _settings(database_url: str, tmp: Path, port: int) -> Settings:
    return Settings(database_url=database_url, clip_dir=tmp / "clips",
                    serve=ServeSettings(max_wait_ms=2, spool_path=tmp / f"spool-{port}.jsonl"),
                    media=MediaSettings(allowed_urls=[f"http://127.0.0.1:{port}/"],
                                        poll_interval_s=0.2, lease_s=3, retry_max_s=1,
                                        dead_after_s=2, open_timeout_s=5))


def _until(check: Callable[[], object], timeout: float = 40) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout} s")


def _metric(client: httpx.Client, name: str, stream: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(f'{name}{{stream="{stream}"}}'):
            return float(line.split()[-1])
    return -1.0


def test_a_stream_is_classified_causally_with_events_at_its_scene_changes(
        scenes_file: Path, database_url: str, tmp_path: Path) -> None:
    port = free_port()
    settings = _settings(database_url, tmp_path, port)
    with running_server(create_app(settings, ColourSource())) as url, \
            httpx.Client(base_url=url, timeout=30) as client, \
            ffmpeg_stream(scenes_file, port):
        refused = client.post("/v1/streams", json={"url": "http://127.0.0.2:1/x.ts",
                                                   "source": "dock-1"})
        assert refused.status_code == 422 and "allowed_urls" in refused.text
        created = client.post("/v1/streams", json={
            "url": f"http://127.0.0.1:{port}/live.ts", "source": "dock-1", "hop": HOP})
        assert created.status_code == 201, created.text
        stream_id = created.json()["id"]

        def events() -> list[dict]:
            found = client.get(f"/v1/streams/{stream_id}").json()["events"]
            return found if len(found) >= 3 else []

        found = _until(events)
        assert [e["label"] for e in found] == ["red", "green", "blue"]
        # Each change is named by the first clip most of whose frames are new, and placed
        # in the middle of the hop where it must have happened: within one hop of the truth.
        for event, change in zip(found[1:], CHANGES[1:]):
            assert abs(event["at_s"] - change) <= HOP_S, (event, change)
        assert _metric(client, "vidmon_stream_frames_in_total", "dock-1") >= 100
        assert _metric(client, "vidmon_stream_clips_total", "dock-1") >= 20
        assert 0 <= _metric(client, "vidmon_stream_lag_seconds", "dock-1") < 2
        listed = client.get("/v1/streams").json()["streams"]
        assert [s["id"] for s in listed] == [stream_id]

        stopped = client.delete(f"/v1/streams/{stream_id}")
        assert stopped.status_code == 200 and stopped.json()["status"] == "stopped"
        _until(lambda: _metric(client, "vidmon_stream_frames_in_total", "dock-1") == -1, 10)
        assert client.get("/v1/streams").json()["streams"] == []
        assert client.delete("/v1/streams/nope").status_code == 404


def test_a_stream_that_drops_is_reported_and_resumes_when_it_returns(
        scenes_file: Path, database_url: str, tmp_path: Path) -> None:
    port = free_port()
    settings = _settings(database_url, tmp_path, port)
    with running_server(create_app(settings, ColourSource())) as url, \
            httpx.Client(base_url=url, timeout=30) as client:
        with ffmpeg_stream(scenes_file, port, loops=-1):
            stream_id = client.post("/v1/streams", json={
                "url": f"http://127.0.0.1:{port}/live.ts", "source": "dock-2",
                "hop": HOP}).json()["id"]
            _until(lambda: _metric(client, "vidmon_stream_clips_total", "dock-2") >= 5)
        # The server is gone: the stream reconnects, then is reported dead.
        state = _until(lambda: client.get(f"/v1/streams/{stream_id}").json()["state"]
                       in ("dead",) and "dead", 30)
        assert state == "dead"
        assert _metric(client, "vidmon_stream_live", "dock-2") == 0
        assert _metric(client, "vidmon_stream_reconnects_total", "dock-2") >= 1
        clips = _metric(client, "vidmon_stream_clips_total", "dock-2")
        with ffmpeg_stream(scenes_file, port, loops=-1):
            _until(lambda: _metric(client, "vidmon_stream_clips_total", "dock-2") >= clips + 5)
            assert client.get(f"/v1/streams/{stream_id}").json()["state"] == "live"


def test_two_replicas_never_pull_one_stream_twice_and_one_takes_over(
        scenes_file: Path, database_url: str, tmp_path: Path) -> None:
    port = free_port()
    settings = _settings(database_url, tmp_path, port)
    replicas = [ExitStack(), ExitStack()]
    clients = []
    with ffmpeg_stream(scenes_file, port, loops=-1, again=True):
        try:
            for i, stack in enumerate(replicas):
                mine = settings.model_copy(update={"serve": settings.serve.model_copy(
                    update={"spool_path": tmp_path / f"spool-{i}.jsonl"})})
                url = stack.enter_context(running_server(create_app(mine, ColourSource())))
                clients.append(stack.enter_context(httpx.Client(base_url=url, timeout=30)))
            clients[0].post("/v1/streams", json={
                "url": f"http://127.0.0.1:{port}/live.ts", "source": "dock-3",
                "hop": HOP}).raise_for_status()
            _until(lambda: max(_metric(c, "vidmon_stream_clips_total", "dock-3")
                               for c in clients) >= 5)
            for _ in range(10):  # over two seconds, only one replica ever pulls it
                pulling = [_metric(c, "vidmon_stream_frames_in_total", "dock-3") >= 0
                           for c in clients]
                assert sum(pulling) == 1, pulling
                time.sleep(0.2)
            holder = pulling.index(True)
            replicas[holder].close()  # the replica pulling it stops: the other takes it
            other = clients[1 - holder]
            _until(lambda: _metric(other, "vidmon_stream_clips_total", "dock-3") >= 5, 30)
        finally:
            for stack in replicas:
                stack.close()
