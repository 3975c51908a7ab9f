"""Production traffic and late labels, on a simulated clock.

Each simulated hour the simulator draws events (class mix and novel classes from the
scenario), renders them, lets the scenario's camera record them, encodes each as a real
video file and posts it to a running service with bounded concurrency. A labeling team
answers for a share of predictions a fixed delay (in simulated hours) after each event;
their labels go to ``/v1/feedback`` at the end of the hour in which they come due. Hours
run as fast as the service answers.
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from simulations.scenarios import Scenario, SimClip
from training.synthetic import CLASS_NAMES, NOVEL_CLASSES, ClipSpec, generate_named_clip
from training.video_io import write_video

CONTENT_TYPES = {".mp4": "video/mp4", ".webm": "video/webm", ".avi": "video/x-msvideo",
                 ".mkv": "video/x-matroska", ".mov": "video/quicktime", ".gif": "image/gif"}


@dataclass(frozen=True)
class TrafficConfig:
    """How much traffic, how it is encoded, and how labels come back."""

    requests_per_hour: int = 60
    concurrency: int = 8
    spec: ClipSpec = ClipSpec(16, 32, 32)
    fps: float = 8.0
    video_format: str = ".mp4"
    label_fraction: float = 0.5
    label_delay_hours: float = 0.25
    seconds_per_hour: float = 0.0  # real seconds a simulated hour lasts; 0: as fast as it can
    seed: int = 0
    # Cameras the events come from in turn, named camera-0, camera-1, ... (sent as each
    # request's source); 0: the requests name no source.
    sources: int = 0


@dataclass(frozen=True)
class Sent:
    """One request the simulator made and what it learned."""

    hour: float  # when the event happened, in simulated hours
    true_label: str
    status: int
    prediction_id: str | None = None
    predicted_label: str | None = None
    model_version: str | None = None
    source: str | None = None


@dataclass
class HourResult:
    """Traffic of one simulated hour."""

    hour: float
    sent: list[Sent] = field(default_factory=list)
    labels_sent: int = 0

    @property
    def accuracy(self) -> float:
        """Share of answered requests whose prediction matched the true event."""
        answered = [s for s in self.sent if s.prediction_id]
        return float(np.mean([s.predicted_label == s.true_label for s in answered])) \
            if answered else float("nan")

    @property
    def failures(self) -> int:
        """Requests that did not get a 200."""
        return sum(s.status != 200 for s in self.sent)


def draw_event(scenario: Scenario, rng: np.random.Generator, hour: float, spec: ClipSpec,
               fps: float) -> SimClip:
    """One event (class mix and novel classes from ``scenario``), as the scenario's camera
    records it at ``hour``."""
    if scenario.draws_novel(rng, hour):
        label = NOVEL_CLASSES[0]
    else:
        weights = scenario.label_weights(CLASS_NAMES, hour)
        p = None if weights is None else weights / weights.sum()
        label = CLASS_NAMES[int(rng.choice(len(CLASS_NAMES), p=p))]
    frames = generate_named_clip(label, rng, spec)
    return scenario.transform(SimClip(frames, fps, label), rng, hour)


class TrafficSimulator:
    """Sends one simulated hour of traffic at a time to ``base_url``."""

    def __init__(self, base_url: str, scenario: Scenario, config: TrafficConfig = TrafficConfig()
                 ) -> None:
        if config.video_format not in CONTENT_TYPES:
            raise ValueError(f"unsupported format {config.video_format}")
        self.base_url = base_url
        self.scenario = scenario
        # What happens to one camera only (its lens goes out of focus), on top of
        # ``scenario``, by source name.
        self.source_scenarios: dict[str, Scenario] = {}
        self.config = config
        self.rng = np.random.default_rng(config.seed)
        self._pending_labels: list[tuple[float, str, str]] = []  # (due hour, id, label)
        self._workdir = Path(tempfile.mkdtemp(prefix="vidmon-traffic-"))

    def source_of(self, index: int) -> str | None:
        """The camera the hour's ``index``-th event comes from (in turn), or None."""
        return f"camera-{index % self.config.sources}" if self.config.sources else None

    def _draw(self, hour: float, source: str | None = None) -> SimClip:
        clip = draw_event(self.scenario, self.rng, hour, self.config.spec, self.config.fps)
        own = self.source_scenarios.get(source) if source is not None else None
        return own.transform(clip, self.rng, hour) if own is not None else clip

    def _encode(self, clip: SimClip, index: int) -> bytes:
        path = self._workdir / f"event-{index}{self.config.video_format}"
        write_video(clip.frames, path, fps=clip.fps)
        data = path.read_bytes()
        path.unlink()
        return data

    async def _post(self, client: httpx.AsyncClient, at: float, clip: SimClip, data: bytes,
                    source: str | None = None) -> Sent:
        name = f"event{self.config.video_format}"
        files = {"file": (name, data, CONTENT_TYPES[self.config.video_format])}
        headers = {"x-vidmon-source": source} if source else {}
        response = await client.post("/v1/predict", files=files, headers=headers)
        if response.status_code != 200:
            return Sent(at, clip.label, response.status_code, source=source)
        body = response.json()
        return Sent(at, clip.label, 200, body["prediction_id"], body["label"],
                    body["model"]["version"], source)

    async def run_hour(self, hour: float) -> HourResult:
        """Send this hour's requests, then the labels that have come due by its end."""
        result = HourResult(hour)
        times = [hour + i / self.config.requests_per_hour
                 for i in range(self.config.requests_per_hour)]
        sources = [self.source_of(i) for i in range(len(times))]
        clips = [self._draw(at, source) for at, source in zip(times, sources)]
        payloads = [self._encode(c, i) for i, c in enumerate(clips)]
        limits = httpx.Limits(max_connections=self.config.concurrency)
        loop = asyncio.get_running_loop()
        began = loop.time()
        async with httpx.AsyncClient(base_url=self.base_url, timeout=120, limits=limits) as client:
            gate = asyncio.Semaphore(self.config.concurrency)

            async def one(at: float, clip: SimClip, data: bytes, source: str | None) -> Sent:
                # Paced: each event leaves at its moment of the hour, scaled to real time.
                await asyncio.sleep(max(0.0, began + (at - hour) * self.config.seconds_per_hour
                                        - loop.time()))
                async with gate:
                    return await self._post(client, at, clip, data, source)

            result.sent = list(await asyncio.gather(
                *[one(at, c, d, s) for at, c, d, s in zip(times, clips, payloads, sources)]))
            for sent in result.sent:
                if sent.prediction_id and self.rng.random() < self.config.label_fraction:
                    self._pending_labels.append((sent.hour + self.config.label_delay_hours,
                                                 sent.prediction_id, sent.true_label))
            result.labels_sent = await self._send_due_labels(client, hour + 1.0)
        return result

    async def _send_due_labels(self, client: httpx.AsyncClient, now_hour: float) -> int:
        due = [p for p in self._pending_labels if p[0] <= now_hour]
        if not due:
            return 0
        self._pending_labels = [p for p in self._pending_labels if p[0] > now_hour]
        body = {"labels": [{"prediction_id": pid, "label": label} for _, pid, label in due]}
        response = await client.post("/v1/feedback", json=body)
        response.raise_for_status()
        return len(response.json()["stored"])

    @property
    def pending_labels(self) -> int:
        """Labels the team still owes."""
        return len(self._pending_labels)


def parse_scenario(text: str) -> Scenario:
    """``NAME[@ONSET[+RAMP]]`` as a scenario."""
    from simulations.scenarios import build

    name, _, timing = text.partition("@")
    onset, _, ramp = timing.partition("+")
    return build(name, onset=float(onset or 0), ramp=float(ramp or 0))


def simulate_command(url: str, scenarios: list[str], hours: int, config: TrafficConfig) -> int:
    """``vidmon simulate``: hours of traffic against ``url``, a JSON line per hour; exit 1
    when any request failed, 2 for a bad scenario."""
    import asyncio
    import json
    import sys

    from simulations.scenarios import compose

    try:
        parts = [parse_scenario(text) for text in scenarios]
    except ValueError as exc:
        print(f"vidmon simulate: {exc}", file=sys.stderr)
        return 2
    simulator = TrafficSimulator(url, compose(*parts), config)
    failures = 0
    for hour in range(hours):
        result = asyncio.run(simulator.run_hour(float(hour)))
        failures += result.failures
        versions = sorted({s.model_version for s in result.sent if s.model_version})
        print(json.dumps({"hour": hour, "sent": len(result.sent), "failures": result.failures,
                          "accuracy": round(result.accuracy, 4), "labels_sent":
                          result.labels_sent, "model_versions": versions}), flush=True)
    return 1 if failures else 0
