"""``vidmon demo`` end to end at small sizes: a real service on 127.0.0.1, encoded video
traffic, the monitor on simulated time, retrains as separate processes, MLflow in a temp
folder. It must show the four things the demo promises."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
from collections import Counter
from datetime import timedelta
from pathlib import Path

import httpx
import mlflow
import pytest
from mlflow import MlflowClient

from monitor.settings import Settings, TrainSettings
from monitor.store import create_store_engine
from monitor.store.alerts import AlertRepository
from monitor.store.reports import ReportRepository
from monitor.store.retrains import RetrainRepository
from simulations.demo import DemoConfig, DemoResult, run_demo
from simulations.timeline import RECOVERY_POINTS, accuracy_gap_bound, pooled_accuracy
from tests.waiting import free_port, wait_until


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoResult:
    output = tmp_path_factory.mktemp("demo")
    # A smaller first model (60 clips a class, held-out accuracy 0.91) and 8-epoch retrains
    # shorten the suite: the fixture took 379-432 s instead of 521-595 s,
    # and the mirror phase's recovery bound was -0.2 (6 epochs), +1.4 (6) and +4.3 (8)
    # points against the -3 allowed.
    config = DemoConfig(clean_hours=3, recovery_hours=2, requests_per_hour=160,
                        min_labeled=400, train_clips_per_class=60, retrain_epochs=8,
                        output=output)
    lines: list[str] = []
    # 200 clips for each version's accuracy estimators instead of 600: they cost a forward
    # pass per clip under 24 corrupted windows (a minute a retrain), and no check here
    # reads their estimates.
    settings = Settings(train=TrainSettings(estimator_clips=200))
    result = run_demo(settings, config, say=lines.append)
    (output / "printed.txt").write_text("\n".join(lines))
    return result


def _run_as_pasted(command: str, demo: DemoResult) -> None:
    """Run a printed command in a fresh shell (no VIDMON_ settings, its port swapped for a
    free one) and wait for it to answer on 127.0.0.1; the dashboard must serve the demo's
    champion."""
    port = free_port()
    words = command.rsplit(" --port ", 1)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("VIDMON_") and k != "MLFLOW_TRACKING_URI"}
    process = subprocess.Popen(["bash", "-c", f"{words[0]} --port {port}"], env=env,
                               start_new_session=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        def answers() -> bool:
            assert process.poll() is None, process.communicate()[1][-2000:]
            try:
                return httpx.get(base + "/", timeout=5).status_code == 200
            except httpx.TransportError:
                return False
        wait_until(answers, timeout_s=120)
        if " serve" in command:
            champion = MlflowClient(demo.settings.mlflow_tracking_uri) \
                .get_model_version_by_alias(demo.settings.model_name, "champion")
            assert httpx.get(base + "/readyz", timeout=5).json()["version"] == str(
                champion.version)
            # the folder's .env: the dashboard draws the demo's hourly windows, not 5-minute
            # ones with every hour a quiet gap
            shown = httpx.get(base + "/v1/dashboard", timeout=30).json()
            assert shown["interval_s"] == demo.settings.monitor.interval_s == 3600
            assert len(shown["timeline"]) == len(demo.rows)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)


def _phase(result: DemoResult, name: str) -> list:
    return [r for r in result.rows if r.phase == name]


def _after_promotion(rows: list) -> list:
    promoted = next(i for i, r in enumerate(rows) if "promoted" in r.event)
    return rows[promoted + 1:]


def test_clean_windows_raise_no_drift(demo: DemoResult) -> None:
    clean = _phase(demo, "clean")
    assert len(clean) == 3 and all(r.report_id for r in clean)
    assert [r.verdict for r in clean] == ["no_drift"] * 3
    assert not any(r.decision_triggered for r in clean)


def test_covariate_drift_is_flagged_within_two_windows_of_its_onset(demo: DemoResult) -> None:
    blur = _phase(demo, "blur")
    assert "drift" in (blur[0].verdict, blur[1].verdict)
    assert min(r.embedding_p for r in blur[:2]) < demo.settings.monitor.alpha


def test_concept_drift_is_caught_through_realized_accuracy(demo: DemoResult) -> None:
    mirror = _phase(demo, "mirror")
    trigger = next(r for r in mirror if r.decision_triggered)
    before = mirror[: mirror.index(trigger) + 1]
    # The inputs look alike (alpha allows one chance alarm) but the labels disagree.
    assert sum(r.verdict == "drift" for r in before) <= 1
    assert all(r.realized_accuracy < 0.8 for r in before)
    window_reasons = [x for x in trigger.decision_reasons if x.startswith("window ")]
    assert window_reasons and all("realized accuracy" in x for x in window_reasons)


def test_after_promotion_accuracy_is_back_within_three_points(demo: DemoResult) -> None:
    clean, blur, mirror = (_phase(demo, p) for p in ("clean", "blur", "mirror"))
    blur_after, mirror_after = _after_promotion(blur), _after_promotion(mirror)
    assert len(blur_after) == len(mirror_after) == 2
    # "within three points" as the demo checks it: not shown (one-sided 95 %) to be more
    # than three points lower; two windows of 160 requests cannot tell 3 from 4 points
    assert accuracy_gap_bound(blur_after, clean) >= -RECOVERY_POINTS, (
        pooled_accuracy(blur_after), pooled_accuracy(clean))
    assert accuracy_gap_bound(mirror_after, blur_after) >= -RECOVERY_POINTS, (
        pooled_accuracy(mirror_after), pooled_accuracy(blur_after))
    assert demo.passed, demo.checks


def client_aliases(settings) -> dict[str, str]:
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    return MlflowClient().get_registered_model(settings.model_name).aliases


def test_the_loop_left_its_trail_in_the_store_and_mlflow(demo: DemoResult) -> None:
    settings = demo.settings
    attempts = RetrainRepository(create_store_engine(settings.database_url)).list(
        settings.model_name, triggered_only=True)
    # Each phase ends with a promotion; a challenger the gate could not yet tell apart
    # from the champion (its paired interval's low end under the margin, on a hundred-odd
    # held-out videos) may be rejected first, with its interval said.
    assert {d["status"] for d in attempts} <= {"promoted", "rejected"}
    for rejected in (d for d in attempts if d["status"] == "rejected"):
        assert rejected["gate"]["recent"]["low"] < rejected["gate"]["margin"]
        assert "interval" in rejected["gate"]["reason"]
    decisions = [d for d in attempts if d["status"] == "promoted"]
    assert len(decisions) == 2 and attempts[0]["status"] == "promoted"
    for d in decisions:
        assert d["gate"]["recent"]["low"] >= d["gate"]["margin"]
        assert d["gate"]["recent"]["videos"] >= demo.settings.monitor.min_rows
    # one time line: a retrain finishes after its decision, within the hour the clock
    # stood still for it, and reports are stamped on simulated time too
    for d in attempts:
        assert d["created_at"] <= d["finished_at"] < d["created_at"] + timedelta(hours=1)
    reports = ReportRepository(create_store_engine(settings.database_url))
    for row in demo.rows[:3]:
        report = reports.get(row.report_id)
        assert report["window_end"] <= report["created_at"] < report["window_end"] + \
            timedelta(hours=1)
    assert set(client_aliases(settings)) == {"champion"}  # no challenger left on it
    # alerts: drift once (blur's first window), each retrain triggered and promoted
    alerts = AlertRepository(create_store_engine(settings.database_url)).list(limit=500)
    kinds = Counter(a["kind"] for a in alerts)
    assert kinds["retrain_triggered"] == len(attempts) and kinds["promoted"] == 2, kinds
    assert kinds["rejected"] == len(attempts) - 2
    # accuracy at risk is the loud alert: blur's and mirror's runs raised it
    assert kinds["accuracy_at_risk"] >= 2
    assert 1 <= kinds["drift"] <= 3  # blur's run, one per model version that saw drift
    first = min((a for a in alerts if a["kind"] == "drift"), key=lambda a: a["created_at"])
    blur = _phase(demo, "blur")
    assert first["payload"]["report_id"] in {r.report_id for r in blur[:2]}
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    client = MlflowClient()
    champion = client.get_model_version_by_alias(settings.model_name, "champion")
    assert str(champion.version) == decisions[0]["challenger_version"]
    mirror_run = client.get_run(decisions[0]["mlflow_run_id"])
    assert set(mirror_run.data.tags["vidmon.relabeled_classes"].split(",")) == {
        "move_left", "move_right", "orbit_cw", "orbit_ccw"}
    blur_run = client.get_run(decisions[1]["mlflow_run_id"])
    assert blur_run.data.tags["vidmon.relabeled_classes"] == "none"  # a blur changes no label
    served = {r.served_by for r in demo.rows}
    assert served == {"v1", f"v{decisions[1]['challenger_version']}", f"v{champion.version}"}


def test_it_writes_the_plot_the_reports_and_says_where_to_look(demo: DemoResult) -> None:
    out = demo.output
    assert (out / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pages = sorted((out / "reports").glob("*.html"))
    assert len(pages) == len(demo.rows)
    assert "evidently" in pages[0].read_text().lower()
    # Evidently's script and font once, in reports/assets, and pages that load them there
    assets = {p.name for p in (out / "reports" / "assets").iterdir()}
    script = next(name for name in assets if name.endswith(".js"))
    assert "material-ui-icons.woff2" in assets
    assert all(f"assets/{script}" in page.read_text() and page.stat().st_size < 1_000_000
               for page in pages)
    record = json.loads((out / "timeline.json").read_text())
    assert record["passed"] and len(record["windows"]) == len(demo.rows)
    printed = (out / "printed.txt").read_text()
    assert "[PASS] no drift flagged in clean windows" in printed
    assert "mlflow ui --backend-store-uri" in printed and str(out / "reports") in printed
    assert "vidmon serve" in printed and "dashboard" in printed
    # the three commands printed each stand alone on a line and run as pasted
    commands = [line.strip() for line in printed.splitlines() if line.startswith("    ")
                and " --port " in line]
    programs = [shlex.split(c.split("&&")[-1])[0] for c in commands]
    assert [Path(p).name for p in programs] == ["vidmon", "mlflow", "evidently"], commands
    assert all(shutil.which(p) for p in programs), programs
    for command in commands:
        _run_as_pasted(command, demo)
    assert "epoch 1/" in printed  # retrain progress by epoch
    assert "retrain triggered" in printed or "promoted" in printed
    assert "retention deleted 0 predictions" in printed  # the monitor's hourly job, once
    assert "MB allowed" in printed


def test_a_second_run_reuses_the_first_model_and_starts_from_it(demo: DemoResult) -> None:
    config = DemoConfig(phases=(), clean_hours=1, requests_per_hour=20, output=demo.output)
    lines: list[str] = []
    again = run_demo(Settings(), config, say=lines.append)
    assert not any("training one" in line for line in lines)
    assert any("to the base model v1" in line for line in lines)
    assert [r.served_by for r in again.rows] == ["v1"]
    assert Path(again.output / "timeline.png").exists()
