"""Load from many clients at once, recording exactly what the service acknowledged."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field

import httpx


@dataclass
class Acknowledged:
    """Predictions answered 200, labels answered 200 (and how), and contract breaches."""

    predictions: set[str] = field(default_factory=set)
    labels: dict[str, str] = field(default_factory=dict)
    pending: set[str] = field(default_factory=set)
    # Labels sent after an id's last acknowledged one whose answer never came (the server
    # was killed): the server may have made them durable, and a later label wins.
    unanswered: dict[str, list[str]] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)  # acknowledged ids reported unknown
    statuses: dict[int, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Load:
    """``clients`` threads posting clips (and every ``label_every``-th time a label for one
    of their own acknowledged predictions) until :meth:`stop`."""

    def __init__(self, url: str, clip: bytes, labels: tuple[str, ...], clients: int = 32,
                 label_every: int = 3) -> None:
        self.url, self.clip, self.label_names = url, clip, labels
        self.label_every = label_every
        self.seen = Acknowledged()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(i,), daemon=True)
                         for i in range(clients)]

    def start(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> Acknowledged:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)
        return self.seen

    def _count(self, status: int) -> None:
        with self.seen.lock:
            self.seen.statuses[status] = self.seen.statuses.get(status, 0) + 1

    def _client(self, number: int) -> None:
        rng = random.Random(number)
        mine: list[str] = []
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self._stop.is_set():
                try:
                    self._one(client, rng, mine)
                except httpx.HTTPError:
                    time.sleep(0.05)  # the server is down or restarting: try again

    def _one(self, client: httpx.Client, rng: random.Random, mine: list[str]) -> None:
        if mine and rng.random() < 1 / self.label_every:
            target, label = rng.choice(mine), rng.choice(self.label_names)
            try:
                response = client.post("/v1/feedback", json={
                    "labels": [{"prediction_id": target, "label": label}]})
            except httpx.HTTPError:
                with self.seen.lock:
                    self.seen.unanswered.setdefault(target, []).append(label)
                raise
            self._count(response.status_code)
            if response.status_code == 200:
                body = response.json()
                with self.seen.lock:
                    if target in body["unknown_ids"]:
                        self.seen.unknown.append(target)
                    else:
                        self.seen.labels[target] = label
                        self.seen.unanswered.pop(target, None)
                        if target in body["pending_ids"]:
                            self.seen.pending.add(target)
            return
        response = client.post("/v1/predict", files={
            "file": ("clip.npy", self.clip, "application/x-npy")})
        self._count(response.status_code)
        if response.status_code == 200:
            prediction_id = response.json()["prediction_id"]
            mine.append(prediction_id)
            with self.seen.lock:
                self.seen.predictions.add(prediction_id)
