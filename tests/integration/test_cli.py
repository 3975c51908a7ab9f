"""The ``vidmon`` command as a newcomer meets it: failures they can fix are one line and a
non-zero exit (``--debug`` shows the traceback), and every option says what it does."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from monitor.settings import Settings
from simulations.cli import build_parser


def _vidmon(cwd: Path, *args: str, env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``vidmon ARGS`` in a fresh process, in ``cwd``, on the embedded defaults there."""
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("VIDMON_", "MLFLOW_TRACKING"))}
    return subprocess.run([sys.executable, "-m", "simulations.cli", *args], cwd=cwd,
                          env={**clean, "MLFLOW_DISABLE_TELEMETRY": "true", **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


def _one_line_error(result: subprocess.CompletedProcess[str], command: str) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]  # progress lines may come before it
    assert last.startswith(f"vidmon {command}: "), result.stderr
    return last


def test_serving_with_no_model_says_what_to_run_and_debug_shows_the_traceback(
        tmp_path: Path) -> None:
    line = _one_line_error(_vidmon(tmp_path, "serve"), "serve")
    assert "no version of vidmon-video-classifier" in line
    assert "`vidmon train`" in line and "`vidmon register MODEL_FILE" in line

    debug = _vidmon(tmp_path, "serve", "--debug")
    assert debug.returncode != 0
    assert "Traceback" in debug.stderr and "NoModel" in debug.stderr


def test_retrain_and_promote_without_the_model_or_version_are_one_line(tmp_path: Path) -> None:
    assert "`vidmon train`" in _one_line_error(_vidmon(tmp_path, "retrain"), "retrain")
    line = _one_line_error(_vidmon(tmp_path, "promote", "7"), "promote")
    assert "not found" in line and "vidmon versions" in line


def test_an_unreachable_store_or_server_and_a_bad_setting_are_one_line(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = _vidmon(tmp_path, "gc", "--dry-run", env={
        "VIDMON_DATABASE_URL": f"postgresql+psycopg://postgres:secret@127.0.0.1:{port}/x"})
    line = _one_line_error(store, "gc")
    assert "cannot reach the store" in line and "secret" not in line

    # on MLflow's default retries (about four minutes of them), at once
    for command in ("versions", "serve"):
        server = _vidmon(tmp_path, command, timeout=60,
                         env={"VIDMON_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"})
        assert f"cannot reach the MLflow server at http://127.0.0.1:{port}" in _one_line_error(
            server, command)

    bad = _vidmon(tmp_path, "gc", env={"VIDMON_SERVE__PORT": "eighty"})
    assert "serve.port" in _one_line_error(bad, "gc")

    missing = _vidmon(tmp_path, "register", str(tmp_path / "model.pt"), "--card",
                      str(tmp_path / "card.yaml"), "--reference-data", str(tmp_path))
    assert "card.yaml" in _one_line_error(missing, "register")


def test_a_taken_port_is_one_line_before_anything_starts(model_store: Settings,
                                                         tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _vidmon(tmp_path, "serve", "--port", str(port), env={
            "VIDMON_MLFLOW_TRACKING_URI": model_store.mlflow_tracking_uri,
            "VIDMON_MODEL_NAME": model_store.model_name})
    line = _one_line_error(result, "serve")
    assert f"port {port} on 127.0.0.1 is taken" in line and "--port" in line
    assert not (tmp_path / "vidmon.db").exists()  # refused before the store was touched


def _walk(parser: argparse.ArgumentParser, path: str) -> list[tuple[str, argparse.Action]]:
    actions = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                actions += _walk(sub, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction):
            actions.append((path, action))
    return actions


def test_every_option_of_every_subcommand_has_help() -> None:
    walked = _walk(build_parser(), "vidmon")
    assert len({path for path, _ in walked}) >= 14  # vidmon and its subcommands
    missing = [f"{path} {action.option_strings or action.dest}" for path, action in walked
               if not action.help]
    assert not missing, f"options without help: {missing}"


def test_help_opens_with_whole_sentences_and_shows_defaults() -> None:
    parser = build_parser()
    top = parser.format_help()
    assert "vidmon demo" in top and "run by the code it\n" not in top
    demo = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)
                ).choices["demo"].format_help()
    flat = " ".join(demo.split())
    assert "hours of clean traffic before the first phase (default: 4)" in flat
    assert "seed of the traffic (default: 0)" in flat
    assert "mirror" in flat and "frame_rate_drop" in flat  # the scenarios are listed
    with pytest.raises(SystemExit):
        parser.parse_args(["demo", "--help"])
