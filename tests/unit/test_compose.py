"""The compose stack, checked without Docker (it does not run here): every command is a
real ``vidmon`` (or ``mlflow server``) command line, every variable a real setting, and the
services wait for what they need."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from monitor.settings import Settings
from simulations.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
GPU = yaml.safe_load((ROOT / "docker-compose.gpu.yml").read_text())
SERVICES = COMPOSE["services"]
VARIABLE = re.compile(r"\$\{(\w+)(?::?[-?][^}]*)?\}")


def _example_env() -> dict[str, str]:
    pairs = [line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    return {key: value for key, value in pairs}


def _interpolate(text: str, env: dict[str, str]) -> str:
    def value(match: re.Match) -> str:
        name, rest = match.group(1), match.group(0)
        if name in env and env[name] != "":
            return env[name]
        default = re.search(r":?-([^}]*)\}$", rest)
        return default.group(1) if default else ""
    return VARIABLE.sub(value, text)


def _is_setting(name: str) -> bool:
    """Whether ``VIDMON_...`` names a field of Settings or of one of its sections."""
    field, _, sub = name.removeprefix("VIDMON_").lower().partition("__")
    fields = Settings.model_fields
    if field not in fields:
        return False
    if not sub:
        return True
    section = fields[field].annotation
    return hasattr(section, "model_fields") and sub in section.model_fields


def test_the_stack_has_the_services_the_deployment_needs() -> None:
    assert set(SERVICES) == {"postgres", "s3", "migrate", "mlflow", "dataset", "train", "api",
                             "monitor", "worker", "prometheus", "grafana"}
    assert SERVICES["migrate"]["restart"] == "no"
    assert SERVICES["mlflow"]["depends_on"]["migrate"]["condition"] == \
        "service_completed_successfully"
    assert SERVICES["train"]["restart"] == "no"  # one-shot
    assert SERVICES["monitor"]["deploy"]["replicas"] == 2
    assert "replicas" in SERVICES["api"]["deploy"]
    for name in ("postgres", "mlflow", "api"):
        assert SERVICES[name]["healthcheck"]["test"], name
    assert "postgres-data:/var/lib/postgresql/data" in SERVICES["postgres"]["volumes"]


@pytest.mark.parametrize("name", ["dataset", "train", "api", "monitor", "worker", "migrate"])
def test_vidmon_services_run_real_subcommands(name: str) -> None:
    command = SERVICES[name]["command"]
    assert command[0] == "vidmon"
    args = build_parser().parse_args(command[1:])  # exits (fails the test) on a bad flag
    assert args.command == command[1]


def test_the_mlflow_service_is_a_real_mlflow_server_command_line() -> None:
    from mlflow.cli import server

    command = SERVICES["mlflow"]["command"]
    assert command[:2] == ["mlflow", "server"]
    known = {opt for param in server.params for opt in param.opts}
    flags = [arg for arg in command[2:] if arg.startswith("--")]
    assert flags and set(flags) <= known, set(flags) - known
    backend = command[command.index("--backend-store-uri") + 1]
    assert backend.startswith("postgresql+psycopg://") and backend.endswith("/mlflow")
    assert "--serve-artifacts" in command


def test_every_variable_is_a_real_setting_and_parses(monkeypatch: pytest.MonkeyPatch) -> None:
    env = _example_env()
    names = set(env)
    for service in SERVICES.values():
        names |= set(service.get("environment", {}))
    vidmon = {n for n in names if n.startswith("VIDMON_") and n != "VIDMON_VARIANT"}
    assert vidmon and not {n for n in vidmon if not _is_setting(n)}
    values = {**env, **{k: _interpolate(str(v), env)
                        for k, v in SERVICES["api"]["environment"].items()}}
    for key, value in values.items():
        if key in vidmon and value != "":
            monkeypatch.setenv(key, value)
    settings = Settings()  # validates every value as the containers will
    assert settings.database_url.startswith("postgresql+psycopg://vidmon:change-me@postgres")
    assert settings.mlflow_tracking_uri == "http://mlflow:5000"
    assert settings.monitor.interval_s == 300 and settings.mlflow_ui == "http://localhost:5000"
    # nothing on a shared disk but the training set: the rest is in the object store
    assert settings.clip_dir == "s3://vidmon/clips" and settings.media.video_store
    assert settings.objects.endpoint_url == "http://s3:9000" and not settings.retrain.auto_start


def test_every_interpolated_variable_is_documented_in_the_example() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    used = set(VARIABLE.findall(text))
    assert used <= set(_example_env()), used - set(_example_env())


def test_services_wait_for_what_they_need() -> None:
    healthy = {n for n, s in SERVICES.items() if "healthcheck" in s}
    for name, service in SERVICES.items():
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in SERVICES
            if condition["condition"] == "service_healthy":
                assert dependency in healthy, (name, dependency)
            else:
                assert condition["condition"] == "service_completed_successfully"
                assert SERVICES[dependency].get("restart") == "no"
    assert SERVICES["api"]["depends_on"]["train"]["condition"] == "service_completed_successfully"


def test_images_build_cpu_or_cuda_and_the_gpu_override_reserves_gpus() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "ARG VARIANT=cpu" in dockerfile and "cuda)" in dockerfile
    for package in ("monitor", "serving", "training", "simulations"):
        assert f"COPY {package} {package}" in dockerfile
    assert SERVICES["api"]["build"]["args"]["VARIANT"] == "${VIDMON_VARIANT:-cpu}"
    assert "monitor" not in GPU["services"]  # it only decides; the workers train
    for name in ("api", "worker"):
        devices = GPU["services"][name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]


DEPLOY = ROOT / "serving" / "deploy"


def _mounts(service: str) -> dict[str, Path]:
    """Container path -> the repository file a service mounts there."""
    mounts = {}
    for volume in SERVICES[service]["volumes"]:
        source, target, *_ = volume.split(":")
        if source.startswith("./"):
            mounts[target] = ROOT / source
    return mounts


def test_prometheus_scrapes_the_api_and_loads_vidmon_s_rules() -> None:
    mounts = _mounts("prometheus")
    assert all(path.is_file() for path in mounts.values()), mounts
    config = yaml.safe_load(mounts["/etc/prometheus/prometheus.yml"].read_text())
    assert set(config["rule_files"]) <= set(mounts)
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "vidmon-api"  # the name the rules' VidmonApiDown looks for
    (sd,) = job["dns_sd_configs"]
    assert sd["names"] == ["api"] and sd["port"] == 8000
    command = SERVICES["api"]["command"]
    assert command[command.index("--port") + 1] == "8000"
    assert SERVICES["prometheus"]["depends_on"]["api"]["condition"] == "service_healthy"


def test_grafana_is_provisioned_with_the_datasource_the_dashboard_names() -> None:
    import json

    mounts = _mounts("grafana")
    assert all(path.is_file() for path in mounts.values()), mounts
    (source,) = yaml.safe_load(
        mounts["/etc/grafana/provisioning/datasources/vidmon.yml"].read_text())["datasources"]
    assert source["url"] == "http://prometheus:9090" and "prometheus" in SERVICES
    (provider,) = yaml.safe_load(
        mounts["/etc/grafana/provisioning/dashboards/vidmon.yml"].read_text())["providers"]
    dashboard_file = mounts["/var/lib/grafana/dashboards/vidmon.json"]
    assert dashboard_file.parent.name == "grafana" and provider["options"]["path"] == \
        "/var/lib/grafana/dashboards"
    dashboard = json.loads(dashboard_file.read_text())
    targets = [t for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(targets) >= 15
    assert {t["datasource"]["uid"] for t in targets} == {source["uid"]}


def test_alerting_rules_pass_promtool_check_and_their_unit_tests() -> None:
    import subprocess

    from tests.needs import need_programs

    (promtool,) = need_programs("promtool", install="apt-get install prometheus")
    for args in (["check", "rules", "vidmon.rules.yml"],
                 ["test", "rules", "vidmon.rules.test.yml"]):
        done = subprocess.run([promtool, *args], cwd=DEPLOY, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
    done = subprocess.run([promtool, "check", "config", "--syntax-only", "prometheus.yml"],
                          cwd=DEPLOY, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
