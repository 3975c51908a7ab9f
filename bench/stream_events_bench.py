"""Live-stream label changes against the truth: how late, how many missed or spurious.

For each seed, a file of scenes (a flat noisy colour each, 2-6 s in whole frames, durations
and colours drawn by the seed) is served in real time by FFmpeg over HTTP (MPEG-TS) on 127.0.0.1,
registered as a stream with vidmon serving the colour model (a model that is not vidmon's
own, whose answer for each scene is known), and the stream's events are compared with the
scene changes: each change is matched to the first event after it with the new label.
Prints per seed and overall: the error (event time - true change time), its largest
absolute value in hops, and missed and spurious events.

    python bench/stream_events_bench.py [--seeds 0 1 2 3 4] [--scenes 6] [--hop 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from monitor.settings import MediaSettings, ServeSettings, Settings  # noqa: E402
from serving.app import create_app  # noqa: E402
from serving.background import running_server  # noqa: E402
from tests.colour_model import COLOUR_CARD, ColourSource, write_scenes  # noqa: E402
from tests.media import ffmpeg_stream, free_port  # noqa: E402


def schedule(seed: int, scenes: int) -> list[tuple[str, float]]:
    """Scenes of 2-6 s (whole frames at 16 fps, so changes fall anywhere between the
    model's frames), each a colour other than the one before."""
    rng = np.random.default_rng(seed)
    colours, out = ["red", "green", "blue"], []
    for _ in range(scenes):
        choices = [c for c in colours if not out or c != out[-1][0]]
        out.append((str(rng.choice(choices)), float(rng.integers(32, 97)) / 16))
    return out


def run_seed(seed: int, scenes: int, hop: int, work: Path) -> tuple[list[float], int, int]:
    """(delays in seconds of the matched changes, missed changes, spurious events)."""
    plan = schedule(seed, scenes)
    video = write_scenes(work / f"scenes-{seed}.mp4", plan)
    changes = np.cumsum([0.0] + [s for _, s in plan])[:-1]
    port = free_port()
    settings = Settings(
        database_url=f"sqlite:///{work / f'vidmon-{seed}.db'}", clip_dir=work / "clips",
        evidently_workspace=None,
        serve=ServeSettings(max_wait_ms=2, spool_path=work / f"spool-{seed}.jsonl"),
        media=MediaSettings(allowed_urls=[f"http://127.0.0.1:{port}/"], poll_interval_s=0.2))
    total = float(sum(s for _, s in plan))
    with running_server(create_app(settings, ColourSource())) as url, \
            httpx.Client(base_url=url, timeout=30) as client, ffmpeg_stream(video, port):
        stream = client.post("/v1/streams", json={
            "url": f"http://127.0.0.1:{port}/live.ts", "source": f"seed-{seed}",
            "hop": hop}).json()["id"]
        time.sleep(total + 4)
        events = client.get(f"/v1/streams/{stream}", params={"events": 1000}).json()["events"]
    delays, used = [], set()
    for (label, _), change in zip(plan[1:], changes[1:]):
        match = next((i for i, e in enumerate(events) if i not in used
                      and e["label"] == label and e["at_s"] >= change - 1.0), None)
        if match is None:
            continue
        used.add(match)
        delays.append(events[match]["at_s"] - change)
    spurious = len(events) - len(used) - 1  # the first event names the first scene
    return delays, scenes - 1 - len(delays), max(spurious, 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--scenes", type=int, default=6)
    parser.add_argument("--hop", type=int, default=2, help="model frames between clips")
    args = parser.parse_args()
    hop_s = args.hop * COLOUR_CARD.stride / COLOUR_CARD.sampling_fps
    work = Path(tempfile.mkdtemp(prefix="vidmon-stream-events-"))
    everything, missed_all, spurious_all = [], 0, 0
    print(f"hop {args.hop} model frames = {hop_s:g} s; clip {COLOUR_CARD.frames} frames = "
          f"{COLOUR_CARD.frames / COLOUR_CARD.sampling_fps:g} s")
    for seed in args.seeds:
        delays, missed, spurious = run_seed(seed, args.scenes, args.hop, work)
        everything += delays
        missed_all, spurious_all = missed_all + missed, spurious_all + spurious
        print(f"seed {seed}: {len(delays)} changes matched, errors "
              f"{', '.join(f'{d:+.3f}' for d in delays)} s; missed {missed}, spurious "
              f"{spurious}", flush=True)
    errors = np.array(everything)
    absolute = np.abs(errors)
    print(f"\n{len(errors)} changes over {len(args.seeds)} seeds: error (event - truth) "
          f"mean {errors.mean():+.3f} s, |error| median {np.median(absolute):.3f} s, max "
          f"{absolute.max():.3f} s ({absolute.max() / hop_s:.2f} hops); within one hop: "
          f"{(absolute <= hop_s + 1e-6).sum()} of {len(errors)}; missed {missed_all}, "
          f"spurious {spurious_all}")


if __name__ == "__main__":
    main()
