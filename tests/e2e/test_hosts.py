"""The stack across real hosts: vidmon's image, built from the Dockerfile, run as separate
containers on Docker networks (PostgreSQL, the MLflow server, an S3 server, two API
replicas, two monitors, two workers, and a link host between the APIs and the store), with
the network failing under load from 32 clients, 30 % of whose answers get a label:

- one API host cut from the store for 30 s spools and answers, then replays;
- the acting monitor's host cut off: the standby takes over within the lease;
- a worker killed with SIGKILL mid-retrain: the other finishes it, one challenger;
- the object store cut off for 30 s: predictions unaffected, the lost clips counted;
- 50 ms delay and 1 % loss between the APIs and the store: throughput and p99 against the
  clean network, measured in one run (printed, and kept in the logs folder);
- a version promoted through one API: both serve it, without a failed answer;

and at the end every acknowledged prediction and label is in the store. The machine's kernel
has no ``netem``: the delay is the link host's (tests/wanlink.py), the loss an iptables
statistic rule in its network namespace. Everything is removed whatever happens.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import pytest
import sqlalchemy as sa

from serving.auth import hash_key
from tests import hosts as docker_hosts
from tests.hosts import SERVICES_IMAGE, Hosts
from tests.load import Load, assert_nothing_acknowledged_was_lost, throughput_and_p99
from tests.media import npy_bytes, sample_clip
from training.synthetic import CLASS_NAMES, ClipSpec

pytestmark = pytest.mark.slow

ADMIN_KEY, LABELER_KEY = "hosts-admin-key", "hosts-labeler-key"
SPEC = ClipSpec(8, 16, 16)
# The monitors' lease: a leader cut off stands down once a renewal fails (a third of the
# lease, then up to 10 s for the store's connection to give up), before the lease runs out.
LEASE_S = 20.0
WORKER_LEASE_S = 6.0
CUT_S = 30.0
BENCH_S = 15.0
PG = "/usr/lib/postgresql/15/bin"
START = time.monotonic()
# The champion is trained from a dataset in the object store; a retrain reads it from there
# by the URL MLflow recorded, so no worker host holds a dataset of its own.
DATASET = "s3://vidmon/datasets/shapes"


def _say(message: str) -> None:
    print(f"[hosts {time.monotonic() - START:6.1f} s] {message}", flush=True)


def _wait(check: Callable[[], object], timeout_s: float, what: str,
          every_s: float = 0.3) -> object:
    """``check()``'s first true answer (errors count as not yet), or fail after
    ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            answer = check()
            if answer:
                return answer
        except (httpx.HTTPError, OSError, sa.exc.DBAPIError, docker_hosts.DockerError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(every_s)


def _env(database_host: str) -> dict[str, str]:
    """The VIDMON_* settings of every vidmon host, as compose and the manifests set them."""
    return {
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "VIDMON_DATABASE_URL": f"postgresql+psycopg://postgres@{database_host}:5432/vidmon",
        "VIDMON_MLFLOW_TRACKING_URI": "http://mlflow:5000",
        "VIDMON_CLIP_DIR": "s3://vidmon/clips",
        "VIDMON_EVIDENTLY_WORKSPACE": "s3://vidmon/evidently",
        "VIDMON_MEDIA__VIDEO_STORE": "s3://vidmon/videos",
        "VIDMON_OBJECTS__ENDPOINT_URL": "http://s3:9000",
        "VIDMON_OBJECTS__ADDRESSING_STYLE": "path",
        "VIDMON_OBJECTS__ACCESS_KEY_ID": "vidmon",
        "VIDMON_OBJECTS__SECRET_ACCESS_KEY": "vidmon-secret",
        "VIDMON_OBJECTS__TIMEOUT_S": "2", "VIDMON_OBJECTS__ATTEMPTS": "1",
        "VIDMON_RETRAIN__AUTO_START": "false",
        "VIDMON_RETRAIN__LEASE_S": str(WORKER_LEASE_S),
        "VIDMON_RETRAIN__MAX_PRODUCTION_CLIPS": "100",
        "VIDMON_RETRAIN__ORIGINAL_CLIPS_PER_CLASS": "4",
        # The monitors never decide a retrain of their own here: the one retrain is the
        # admin's, so exactly one challenger is what one retrain must leave.
        "VIDMON_RETRAIN__MIN_LABELED": "1000000",
        "VIDMON_RETRAIN__EPOCHS": "2",
        "VIDMON_TRAIN": json.dumps({
            "clips_per_class": 4, "test_clips_per_class": 2, "epochs": 1,
            "width_multiplier": 8, "batch_size": 16, "frames": SPEC.frames,
            "estimator_clips": 40,
            "height": SPEC.height, "width": SPEC.width}),
        "VIDMON_MONITOR": json.dumps({"interval_s": 2, "window_minutes": 5, "min_rows": 5,
                                      "lease_ttl_s": LEASE_S}),
        "VIDMON_SERVE__SPOOL_PATH": "/home/vidmon/vidmon-spool.jsonl",
        "VIDMON_SERVE__REPLAY_INTERVAL_S": "1",
        "VIDMON_SERVE__MODEL_POLL_INTERVAL_S": "2",
        "VIDMON_SERVE__CLIP_SAMPLE_RATE": "0.5",
        "VIDMON_ADMIN_KEY": ADMIN_KEY,
        "VIDMON_AUTH__LABELER_KEYS": hash_key(LABELER_KEY),
        "VIDMON_LOG_LEVEL": "INFO",
    }


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hosts]:
    """Hosts on fresh networks, vidmon's image built; all removed on the way out."""
    why = docker_hosts.usable()
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    waited = time.monotonic()
    seconds = docker_hosts.prepare_in_background().wait()
    _say(f"images ready ({', '.join(f'{k} {v:.0f} s' for k, v in seconds.items())}; "
         f"this test waited {time.monotonic() - waited:.0f} s for them)")
    hosts = Hosts(tmp_path_factory.mktemp("hosts"))
    try:
        yield hosts
    finally:
        hosts.close()
        _say(f"hosts removed; their logs are in {hosts.logs}")


def _metric(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    found = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE)
    assert found, f"{name} is not in {url}/metrics"
    return float(found.group(1))


def _start_services(hosts: Hosts) -> sa.Engine:
    """PostgreSQL, the S3 server, the store migrated with its buckets, MLflow on both."""
    hosts.start("postgres", ["bash", "-c",
                             f"set -e; {PG}/initdb -D /tmp/pg -U postgres -A trust >/dev/null;"
                             " echo 'host all all 0.0.0.0/0 trust' >> /tmp/pg/pg_hba.conf;"
                             f" exec {PG}/postgres -D /tmp/pg -c listen_addresses='*'"
                             " -c unix_socket_directories=/tmp -c max_connections=200"],
                image=SERVICES_IMAGE, user="postgres")
    hosts.start("s3", ["moto_server", "-H", "0.0.0.0", "-p", "9000"], image=SERVICES_IMAGE)
    admin = sa.create_engine(f"postgresql+psycopg://postgres@{hosts.ip('postgres', 'back')}"
                             ":5432/postgres", isolation_level="AUTOCOMMIT")
    _wait(lambda: admin.connect().close() is None, 60, "PostgreSQL")
    with admin.connect() as connection:
        for name in ("vidmon", "mlflow"):
            connection.execute(sa.text(f"CREATE DATABASE {name}"))
    admin.dispose()
    env = _env("postgres")
    hosts.one_shot("migrate", ["vidmon", "migrate", "--create-buckets"], env)
    hosts.start("mlflow", ["mlflow", "server", "--backend-store-uri",
                           "postgresql+psycopg://postgres@postgres:5432/mlflow",
                           "--artifacts-destination", "s3://vidmon/mlartifacts",
                           "--serve-artifacts", "--host", "0.0.0.0", "--port", "5000",
                           "--workers", "2", "--allowed-hosts", "mlflow:5000,127.0.0.1:5000"],
                env={**env, "MLFLOW_S3_ENDPOINT_URL": "http://s3:9000",
                     "AWS_ACCESS_KEY_ID": "vidmon", "AWS_SECRET_ACCESS_KEY": "vidmon-secret"})
    _wait(lambda: hosts.exec("mlflow", "python", "-c", "import urllib.request; urllib.request."
                             "urlopen('http://127.0.0.1:5000/health', timeout=3)") is not None,
          120, "the MLflow server", every_s=1)
    return sa.create_engine(
        f"postgresql+psycopg://postgres@{hosts.ip('postgres', 'back')}:5432/vidmon")


def _leader(engine: sa.Engine) -> str | None:
    """The host whose monitor holds the scheduler lease."""
    with engine.connect() as connection:
        holder = connection.execute(sa.text("SELECT holder FROM leases")).scalar()
    return holder.split(":")[0] if holder else None


def _decision(engine: sa.Engine, decision_id: str) -> dict:
    with engine.connect() as connection:
        return dict(connection.execute(sa.text(
            "SELECT * FROM retrain_decisions WHERE id = :id"), {"id": decision_id}).one()._mapping)


@dataclass
class Stack:
    """The running hosts, the store as the test machine reaches it, the APIs' URLs and the
    load on each."""

    hosts: Hosts
    engine: sa.Engine
    urls: list[str]
    loads: list[Load] = field(default_factory=list)


def _start_stack(hosts: Hosts) -> Stack:
    engine = _start_services(hosts)
    env, via_link = _env("postgres"), _env("link")
    hosts.start("link", ["python", "/wanlink.py", "5432", "postgres", "5432"],
                mounts=(f"{docker_hosts.REPO / 'tests' / 'wanlink.py'}:/wanlink.py:ro",))
    started = time.monotonic()
    hosts.one_shot("train", ["sh", "-c", f"vidmon synth --out {DATASET} && exec vidmon train "
                             f"--data {DATASET}"], env)  # version 1, the champion
    _say(f"champion trained in {time.monotonic() - started:.0f} s")
    for i in range(2):
        hosts.start(f"api-{i}", ["vidmon", "serve", "--host", "0.0.0.0", "--port", "8000"],
                    env=via_link, front=True)
        hosts.start(f"monitor-{i}", ["vidmon", "monitor"], env=env)
        hosts.start(f"worker-{i}", ["vidmon", "worker"], env=env)
    urls = [f"http://{hosts.ip(f'api-{i}')}:8000" for i in range(2)]
    for i, url in enumerate(urls):
        _wait(lambda url=url: httpx.get(f"{url}/readyz", timeout=5).status_code == 200, 180,
              f"api-{i} to be ready", every_s=1)
    _say("two APIs ready")
    return Stack(hosts, engine, urls)


def _kill_a_worker_then_cut_an_api_and_the_leader(stack: Stack) -> None:
    """A retrain whose worker is killed mid-run, and while the other worker takes it over,
    api-0 cut from the store for 30 s and the acting monitor cut off."""
    hosts, engine, urls = stack.hosts, stack.engine, stack.urls
    queued = httpx.post(f"{urls[1]}/v1/admin/retrain", timeout=30,
                        headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert queued.status_code == 202, queued.text
    decision_id = queued.json()["decision_id"]
    running = _wait(lambda: (lambda d: d if d["status"] == "running" and d["mlflow_run_id"]
                             else None)(_decision(engine, decision_id)),
                    120, "a worker to start the retrain", every_s=0.2)
    doomed = running["holder"].split(":")[0]
    hosts.signal(doomed, "KILL")
    _say(f"{doomed} killed mid-retrain (run {running['mlflow_run_id']})")

    leader = _wait(lambda: _leader(engine), 60, "a monitor to lead")
    spooled_before = _metric(urls[0], "vidmon_log_records_spooled")
    cut_at = time.monotonic()
    hosts.cut("api-0")
    hosts.cut(leader)
    standby = "monitor-1" if leader == "monitor-0" else "monitor-0"
    _wait(lambda: _leader(engine) == standby, LEASE_S * 2 + 5,
          f"{standby} to take the lease over", every_s=0.2)
    takeover_s, took_over = time.monotonic() - cut_at, datetime.now(UTC)
    _say(f"{standby} took over {takeover_s:.1f} s after {leader} was cut off")
    assert takeover_s <= LEASE_S + LEASE_S / 3 + 2

    _wait(lambda: _metric(urls[0], "vidmon_store_available") == 0
          and _metric(urls[0], "vidmon_log_records_spooled") > spooled_before,
          max(1.0, CUT_S - (time.monotonic() - cut_at)), "api-0 to spool while cut off")
    time.sleep(max(0.0, CUT_S - (time.monotonic() - cut_at)))
    hosts.mend("api-0")
    hosts.mend(leader)
    _wait(lambda: _metric(urls[0], "vidmon_spool_records") == 0
          and _metric(urls[0], "vidmon_store_available") == 1, 90, "api-0 to replay")
    _say("api-0 answered and spooled while cut off, and replayed once mended")
    assert _leader(engine) == standby  # the old leader stands by

    finished = _wait(lambda: (lambda d: d if d["status"] not in ("pending", "running")
                              else None)(_decision(engine, decision_id)),
                     300, "the other worker to finish the retrain", every_s=1)
    survivor = "worker-1" if doomed == "worker-0" else "worker-0"
    assert finished["status"] in ("promoted", "rejected"), finished
    assert finished["holder"].split(":")[0] == survivor and finished["attempts"] == 2
    versions = json.loads(hosts.exec(survivor, "python", "-c", (
        "import json, mlflow; print(json.dumps(sorted(v.version for v in mlflow.MlflowClient"
        f"('http://mlflow:5000').search_model_versions(\"name='{finished['model_name']}'\"))))"
    )).strip().splitlines()[-1])
    assert versions == ["1", "2"]  # the champion and exactly one challenger
    assert finished["challenger_version"] == "2"
    killed_run = hosts.exec(survivor, "python", "-c", (
        "import mlflow; print(mlflow.MlflowClient('http://mlflow:5000')"
        f".get_run('{running['mlflow_run_id']}').info.status)")).strip().splitlines()[-1]
    assert killed_run == "KILLED"  # the takeover ended the killed worker's run
    params = json.loads(hosts.exec(survivor, "python", "-c", (
        "import json, mlflow; print(json.dumps(mlflow.MlflowClient('http://mlflow:5000')"
        f".get_run('{finished['mlflow_run_id']}').data.params))")).strip().splitlines()[-1])
    # the survivor read the champion's dataset from the object store by its URL
    assert params["original_data"] == DATASET and int(params["original_clips"]) > 0, params
    _say(f"{survivor} finished the retrain: {finished['status']}, one challenger (v2)")

    def reported_since() -> int:
        with engine.connect() as connection:
            return connection.execute(sa.text(
                "SELECT count(*) FROM reports WHERE created_at > :t"), {"t": took_over}
            ).scalar_one()
    _wait(reported_since, 90, f"{standby}, leading, to report", every_s=1)


def _object_store_away(stack: Stack) -> None:
    """The object store cut off for 30 s: answers as before, the lost clips counted."""
    def lost_clips() -> float:
        return sum(_metric(url, "vidmon_clips_skipped") + _metric(url, "vidmon_clips_failures")
                   for url in stack.urls)

    lost_before = lost_clips()
    cut_at = time.monotonic()
    stack.hosts.cut("s3")
    time.sleep(CUT_S)
    throughput, _ = throughput_and_p99(stack.loads, cut_at, time.monotonic())
    lost = lost_clips() - lost_before
    stack.hosts.mend("s3")
    _say(f"object store away 30 s: {throughput:.1f} predictions/s, {lost:.0f} clips lost "
         "and counted")
    assert throughput > 0 and lost > 0
    for load in stack.loads:
        assert set(load.seen.statuses) == {200}, load.seen.statuses
    for url in stack.urls:
        _wait(lambda url=url: _metric(url, "vidmon_clip_store_available") == 1, 60,
              "the clip store to be back")


def _wan_bench(stack: Stack) -> str:
    """Throughput and p99 with 50 ms delay and 1 % loss between the APIs and the store,
    against the clean network, in one run."""
    time.sleep(2)
    clean_at = time.monotonic()
    time.sleep(BENCH_S)
    clean = throughput_and_p99(stack.loads, clean_at, time.monotonic())
    stack.hosts.signal("link", "USR1")
    rule = ["INPUT", "-p", "tcp", "--dport", "5432", "-m", "statistic", "--mode",
            "random", "--probability", "0.01", "-j", "DROP"]
    stack.hosts.in_netns("link", "iptables", "-I", *rule)
    try:
        time.sleep(2)
        wan_at = time.monotonic()
        time.sleep(BENCH_S)
        wan = throughput_and_p99(stack.loads, wan_at, time.monotonic())
    finally:
        stack.hosts.in_netns("link", "iptables", "-D", *rule)
        stack.hosts.signal("link", "USR2")
    assert clean[0] > 0 and wan[0] > 0
    return (f"APIs to the store, 32 clients: clean {clean[0]:.1f} predictions/s, p99 "
            f"{clean[1] * 1000:.0f} ms; 50 ms delay + 1 % loss {wan[0]:.1f} predictions/s, "
            f"p99 {wan[1] * 1000:.0f} ms; throughput x{wan[0] / clean[0]:.2f}, "
            f"p99 x{wan[1] / clean[1]:.2f}")


def _one_registry_one_store(stack: Stack) -> None:
    """A version promoted through one API is served by both, under load (no answer lost to
    the swap), and either API lists every report, whichever monitor wrote it."""
    promoted = httpx.post(f"{stack.urls[0]}/v1/admin/promote", json={"version": "2"},
                          headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=60)
    assert promoted.status_code == 200, promoted.text
    for url in stack.urls:
        _wait(lambda url=url: httpx.get(f"{url}/readyz", timeout=5).json()["version"] == "2",
              60, f"{url} to serve version 2")
    with stack.engine.connect() as connection:
        until = connection.execute(sa.text("SELECT max(window_end) FROM reports")).scalar_one()
        before = connection.execute(sa.text("SELECT count(*) FROM reports WHERE window_end < "
                                            ":until"), {"until": until}).scalar_one()
    for url in stack.urls:  # until is exclusive; later windows do not change the count
        listed = httpx.get(f"{url}/v1/reports", timeout=30, params={
            "until": (until if until.tzinfo else until.replace(tzinfo=UTC)).isoformat(),
            "limit": 1}).json()["total"]
        assert listed == before, (url, listed, before)
    _say("v2 promoted through api-0 is served by both; both list every report")


def test_the_stack_across_hosts_survives_cut_links_and_killed_hosts(network: Hosts) -> None:
    stack = _start_stack(network)
    clip = npy_bytes(sample_clip("steady", seed=3, spec=SPEC))
    # One request in 1/0.23 labels an answer not labeled before: 30 % of the answers.
    stack.loads = [Load(url, clip, CLASS_NAMES, clients=16, label_every=1 / 0.23,
                        relabel=False, headers={"Authorization": f"Bearer {LABELER_KEY}"})
                   .start() for url in stack.urls]
    try:
        _wait(lambda: sum(len(load.seen.labels) for load in stack.loads) >= 60, 120,
              "60 acknowledged labels", every_s=1)
        _kill_a_worker_then_cut_an_api_and_the_leader(stack)
        _object_store_away(stack)
        line = _wan_bench(stack)
        (network.logs / "wan-bench.txt").write_text(line + "\n")
        _say(line)
        _one_registry_one_store(stack)
    finally:
        seen = [load.stop() for load in stack.loads]

    for i, url in enumerate(stack.urls):
        _wait(lambda url=url: _metric(url, "vidmon_spool_records") == 0
              and _metric(url, "vidmon_log_queue_depth") == 0, 60, f"api-{i} to drain")
    with stack.engine.connect() as connection:
        twice = connection.execute(sa.text(
            "SELECT model_version, window_end FROM reports GROUP BY 1, 2 "
            "HAVING count(*) > 1")).all()
        reports = connection.execute(sa.text("SELECT count(*) FROM reports")).scalar_one()
    assert reports >= 3 and not twice, twice  # no window reported twice
    for i, acknowledged in enumerate(seen):
        assert set(acknowledged.statuses) == {200}, acknowledged.statuses
        _say(f"api-{i}: {len(acknowledged.predictions)} predictions and "
             f"{len(acknowledged.labels)} labels acknowledged "
             f"({len(acknowledged.labels) / len(acknowledged.predictions):.0%} labeled)")
        assert_nothing_acknowledged_was_lost(
            stack.engine.url.render_as_string(hide_password=False), acknowledged)
    stack.engine.dispose()
