"""What the demo leaves a person: the timeline plot's marks and the commands it prints."""

from __future__ import annotations

import os
import shlex
from datetime import UTC, datetime
from pathlib import Path

import matplotlib.pyplot as plt

from monitor.settings import Settings
from simulations.demo import DemoResult
from simulations.demo_output import _mark_retrains, plot_timeline, ui_commands
from simulations.timeline import WindowRow


def _rows() -> list[WindowRow]:
    """Clean, blur (a rejected then a promoted retrain, v2 serving), mirror (one that
    failed)."""
    plan = [("clean", "v1", "", False), ("clean", "v1", "", False),
            ("blur", "v1", "v2 rejected: interval", True),
            ("blur", "v1", "v3 promoted after 40s", True), ("blur", "v1,v3", "", False),
            ("blur", "v3", "", False), ("mirror", "v3", "retrain failed: boom", True),
            ("mirror", "v3", "", False)]
    return [WindowRow(hour=h, phase=phase, kind="clean", served_by=served, requests=100,
                      failures=0, correct=90 - 30 * (phase != "clean" and served == "v1"),
                      labels_sent=50, verdict="drift" if phase != "clean" else "no drift",
                      drift_share=0.1, embedding_p=0.2, estimated_accuracy=0.8,
                      realized_accuracy=0.85, decision_triggered=triggered, event=event)
            for h, (phase, served, event, triggered) in enumerate(plan)]


def test_each_triggered_retrain_is_marked_by_how_it_ended() -> None:
    fig, axis = plt.subplots()
    _mark_retrains(axis, _rows())
    marks = {c.get_label(): [int(x) for x, _ in c.get_offsets()] for c in axis.collections}
    plt.close(fig)
    assert marks == {"retrain triggered: promoted": [3], "retrain triggered: rejected": [2],
                     "retrain triggered: no result": [6]}


def test_the_plot_is_a_png_with_the_version_serving_named(tmp_path: Path,
                                                         monkeypatch) -> None:
    texts: list[str] = []
    real_text = plt.Axes.text
    monkeypatch.setattr(plt.Axes, "text", lambda self, x, y, s, **kw: (
        texts.append(s), real_text(self, x, y, s, **kw))[1])
    path = plot_timeline(_rows(), 0.05, tmp_path / "timeline.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the swap hour (v1,v3) names v3 once; phases are named where they start
    assert texts.count("v3 serving") == 1 and "blur" in texts and "mirror" in texts


def test_the_printed_commands_each_stand_alone_on_their_ports(tmp_path: Path) -> None:
    settings = Settings(mlflow_tracking_uri=f"sqlite:///{tmp_path / 'my dir' / 'mlflow.db'}",
                        evidently_workspace=tmp_path / "ws")
    result = DemoResult([], [], tmp_path / "my dir", settings, datetime.now(UTC))
    lines = ui_commands(result)
    commands = [line.strip() for line in lines if line.startswith("    ")]
    assert len(commands) == 3 and len(lines) == 6
    ports = [shlex.split(c)[-1] for c in commands]
    assert len(set(ports)) == 3, ports  # three services side by side
    dashboard = shlex.split(commands[0])
    assert dashboard[:2] == ["cd", str((tmp_path / "my dir").resolve())]  # quoted space
    assert "open http://127.0.0.1:" in lines[0] and "&&" not in lines[0]


def test_vidmon_run_in_the_demo_folder_sees_the_demo_run_and_no_secret(
        tmp_path: Path, monkeypatch) -> None:
    from pydantic import SecretStr

    from simulations.demo import DemoConfig, demo_settings, write_folder_env

    for name in [n for n in os.environ if n.startswith("VIDMON_") or n == "MLFLOW_TRACKING_URI"]:
        monkeypatch.delenv(name)
    ran = demo_settings(Settings(admin_key=SecretStr("s3cret")), DemoConfig(output=tmp_path))
    env = write_folder_env(ran, tmp_path)
    assert "s3cret" not in env.read_text()
    monkeypatch.chdir(tmp_path)
    seen = Settings()
    assert seen.monitor == ran.monitor and seen.monitor.interval_s == 3600
    assert (seen.database_url, seen.mlflow_tracking_uri) == (ran.database_url,
                                                              ran.mlflow_tracking_uri)
    assert seen.retrain.accuracy_drop == ran.retrain.accuracy_drop and seen.admin_key is None
