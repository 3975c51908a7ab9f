"""Load from many clients at once, recording exactly what the service acknowledged."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field

import httpx
import sqlalchemy as sa


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
    # (when it was answered, seconds it took) of each acknowledged prediction, monotonic
    answered: list[tuple[float, float]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def throughput_and_p99(loads: list[Load], start: float, end: float) -> tuple[float, float]:
    """Acknowledged predictions per second answered between monotonic ``start`` and
    ``end`` over ``loads``, and their 99th-percentile latency in seconds."""
    took = sorted(t for load in loads for done, t in list(load.seen.answered)
                  if start <= done < end)
    if not took:
        return 0.0, float("nan")
    return len(took) / (end - start), took[min(len(took) - 1, int(0.99 * len(took)))]


class Load:
    """``clients`` threads posting clips (and, one request in ``label_every``, a label for
    one of their own acknowledged predictions, a fresh one unless ``relabel``) until
    :meth:`stop`."""

    def __init__(self, url: str, clip: bytes, labels: tuple[str, ...], clients: int = 32,
                 label_every: float = 3, headers: dict[str, str] | None = None,
                 relabel: bool = True) -> None:
        self.url, self.clip, self.label_names = url, clip, labels
        self.label_every, self.headers, self.relabel = label_every, headers or {}, relabel
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
        with httpx.Client(base_url=self.url, timeout=30, headers=self.headers) as client:
            while not self._stop.is_set():
                try:
                    self._one(client, rng, mine)
                except httpx.HTTPError:
                    time.sleep(0.05)  # the server is down or restarting: try again

    def _one(self, client: httpx.Client, rng: random.Random, mine: list[str]) -> None:
        if mine and rng.random() < 1 / self.label_every:
            # Each answer labeled at most once, unless labels may replace earlier ones.
            target = rng.choice(mine) if self.relabel else mine.pop(rng.randrange(len(mine)))
            label = rng.choice(self.label_names)
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
        started = time.monotonic()
        response = client.post("/v1/predict", files={
            "file": ("clip.npy", self.clip, "application/x-npy")})
        self._count(response.status_code)
        if response.status_code == 200:
            done = time.monotonic()
            prediction_id = response.json()["prediction_id"]
            mine.append(prediction_id)
            with self.seen.lock:
                self.seen.predictions.add(prediction_id)
                self.seen.answered.append((done, done - started))


def labels_resolved(engine: sa.Engine) -> bool:
    """No waiting label whose prediction has landed: the replayer applies those within a
    replay interval (a label and its row committed at the same moment can miss each other)."""
    with engine.connect() as connection:
        return not connection.execute(sa.text(
            "SELECT count(*) FROM pending_labels p WHERE EXISTS (SELECT 1 FROM predictions r "
            "WHERE r.id = p.id OR r.video_id = p.id)")).scalar_one()


def assert_nothing_acknowledged_was_lost(database_url: str, seen: Acknowledged) -> None:
    assert seen.predictions, "the load got no prediction through"
    assert not seen.unknown, f"acknowledged ids reported unknown: {seen.unknown[:3]}"
    print(f"acknowledged {len(seen.predictions)} predictions, {len(seen.labels)} labels "
          f"({len(seen.pending)} answered pending); statuses {seen.statuses}")
    engine = sa.create_engine(database_url)
    try:
        deadline = time.monotonic() + 10
        while not labels_resolved(engine):
            assert time.monotonic() < deadline, "waiting labels were not applied"
            time.sleep(0.2)
        with engine.connect() as connection:
            rows = dict(connection.execute(sa.text(
                "SELECT id, true_label FROM predictions WHERE source = 'production'")).all())
    finally:
        engine.dispose()
    missing = seen.predictions - set(rows)
    assert not missing, f"{len(missing)} of {len(seen.predictions)} acknowledged predictions lost"
    # The stored label is the last acknowledged one, or one sent after it whose answer a
    # kill cut off (the server may have made it durable first: the later label wins).
    wrong = {i: (label, rows.get(i)) for i, label in seen.labels.items()
             if rows.get(i) != label and rows.get(i) not in seen.unanswered.get(i, [])}
    assert not wrong, f"{len(wrong)} of {len(seen.labels)} acknowledged labels lost: " \
                      f"{list(wrong.items())[:3]}"
    later = sum(rows.get(i) != label for i, label in seen.labels.items())
    print(f"labels superseded by a later one whose answer was cut off: {later}")
