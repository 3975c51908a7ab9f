"""Long videos: clips/s of a whole-video job against a raw decode-and-forward loop, and the
server's peak memory for videos of 1, 5 and 10 minutes.

Measured in one run on this machine (720p H.264 at 25 fps, written by FFmpeg's testsrc2,
the default vidmon model architecture):
- raw: PyAV decodes the file (threads on), every frame the clips need is scaled to the
  model's size by FFmpeg, clips of the card's frames go through the network in batches
  of 8; no HTTP, no features, no logging;
- vidmon: ``vidmon serve`` in a subprocess; the file is POSTed to /v1/videos as the body
  and the job polled until done; clips/s = clips / (POST to done), upload included;
- memory: the server's resident memory, sampled every 50 ms while each job runs, minus
  what it held before the job (goal: flat in the video's length).

Usage: python bench/long_video_bench.py [--minutes 1 5 10] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import httpx
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_bench import Server, bench_setup  # noqa: E402

from monitor.preprocess import centre_crop, resized_size, to_model_input  # noqa: E402
from monitor.runtime import resolve_device  # noqa: E402
from training.registry import RegistrySource  # noqa: E402

UNIFORM_CLIP_S = 2.0  # media.uniform_clip_s: the default model's card samples uniformly


def write_test_video(path: Path, minutes: float) -> Path:
    """A 720p H.264 file of ``minutes`` (FFmpeg's testsrc2: moving patterns and a clock)."""
    if not path.exists():
        subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
                        "-i", f"testsrc2=size=1280x720:rate=25:duration={minutes * 60:g}",
                        "-c:v", "libx264", "-preset", "ultrafast", "-g", "50",
                        "-pix_fmt", "yuv420p", str(path)], check=True)
    return path


def raw_clips_per_second(path: Path, runtime, batch: int = 8) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    """Decode and forward, nothing else; (clips/s, clips)."""
    card = runtime.card
    dt = UNIFORM_CLIP_S / card.frames if card.sampling_fps is None else (
        card.stride / card.sampling_fps)
    frames: list[np.ndarray] = []
    clips: list[np.ndarray] = []
    done, next_t = 0, 0.0

    @torch.inference_mode()
    def forward(group: list[np.ndarray]) -> None:
        pixels = torch.from_numpy(np.stack(group)).to(runtime.device)
        runtime.network(to_model_input(pixels, card))

    started = time.perf_counter()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        height, width = resized_size(card, stream.codec_context.height,
                                     stream.codec_context.width)
        for frame in container.decode(stream):
            if frame.time is None or frame.time + 1e-9 < next_t:
                continue
            next_t += dt
            frames.append(centre_crop(frame.to_ndarray(width=width, height=height,
                                                       format="rgb24"), card))
            if len(frames) == card.frames:
                clips.append(np.stack(frames))
                frames = []
                if len(clips) == batch:
                    forward(clips)
                    done, clips = done + len(clips), []
    if clips:
        forward(clips)
        done += len(clips)
    return done / (time.perf_counter() - started), done


def rss_mb(pid: int) -> float:
    """Resident memory of a process (Linux /proc), MB."""
    pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def served_job(url: str, path: Path, pid: int) -> tuple[float, int, float, float]:
    """POST the file as a job, wait for it; (clips/s, clips, MB before, peak MB during)."""
    before = rss_mb(pid)
    peak = before
    running = True

    def sample() -> None:
        nonlocal peak
        while running:
            peak = max(peak, rss_mb(pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with httpx.Client(base_url=url, timeout=600) as client, path.open("rb") as body:
        started = time.perf_counter()
        response = client.post("/v1/videos", content=body,
                               headers={"content-type": "video/mp4"})
        response.raise_for_status()
        job_id = response.json()["id"]
        while True:
            job = client.get(f"/v1/videos/{job_id}").json()
            if job["status"] in ("done", "failed", "cancelled"):
                break
            time.sleep(0.2)
        elapsed = time.perf_counter() - started
    running = False
    sampler.join()
    if job["status"] != "done":
        raise RuntimeError(f"the job ended {job['status']}: {job.get('error')}")
    return job["clips_done"] / elapsed, job["clips_done"], before, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 5, 10])
    parser.add_argument("--keep", type=Path, default=None,
                        help="folder for the test videos (kept between runs)")
    args = parser.parse_args()
    work, env, settings, _, _ = bench_setup("vidmon-long-video-")
    videos = args.keep or work
    videos.mkdir(parents=True, exist_ok=True)
    env.update({"VIDMON_MEDIA__VIDEO_DIR": str(work / "videos"),
                "VIDMON_MEDIA__POLL_INTERVAL_S": "0.2",
                "VIDMON_MEDIA__UNIFORM_CLIP_S": str(UNIFORM_CLIP_S)})
    print("writing the test videos (720p H.264, 25 fps) ...", flush=True)
    files = {m: write_test_video(videos / f"testsrc2-{m:g}min.mp4", m) for m in args.minutes}
    runtime = RegistrySource(settings).load(settings.model_uri,
                                            str(resolve_device(settings.serve.device)))
    longest = max(args.minutes)
    print(f"raw decode-and-forward loop, {longest:g} min ...", flush=True)
    raw, raw_clips = raw_clips_per_second(files[longest], runtime)
    server = Server(env, work)
    try:
        rows = []
        for minutes in args.minutes:
            print(f"vidmon job, {minutes:g} min ...", flush=True)
            rows.append((minutes, *served_job(server.url, files[minutes],
                                              server.process.pid)))
    finally:
        server.stop()
    print(f"\nraw loop ({longest:g} min): {raw:.1f} clips/s ({raw_clips} clips)")
    print("| minutes | clips | vidmon clips/s | vs raw | server MB before | peak MB | "
          "peak - before |")
    print("|---|---|---|---|---|---|---|")
    for minutes, rate, clips, before, peak in rows:
        print(f"| {minutes:g} | {clips} | {rate:.1f} | {rate / raw:.2f}x | {before:.0f} | "
              f"{peak:.0f} | {peak - before:+.0f} |")
    print(f"\n(work folder: {work})")


if __name__ == "__main__":
    main()
