"""The Kubernetes manifests: every overlay renders with ``kubectl kustomize`` and validates
against the schemas of a current Kubernetes; then what schemas cannot say: probes, resources
and non-root users everywhere, every VIDMON_* variable a real setting, images pinned."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitor.settings import Settings
from tests.needs import need_programs

K8S = Path(__file__).resolve().parents[2] / "serving" / "deploy" / "k8s"
OVERLAYS = ("trial", "external", "gpu")
KUBERNETES = "1.35.0"
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet")
POD_OWNERS = (*WORKLOADS, "Job")


def _render(overlay: str) -> list[dict[str, Any]]:
    kubectl = need_programs("kubectl", install="https://kubernetes.io/docs/tasks/tools/")[0]
    done = subprocess.run([kubectl, "kustomize", str(K8S / "overlays" / overlay)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, _render(request.param)


def _pods(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]["spec"])
            for d in docs if d["kind"] in POD_OWNERS]


def _setting_names() -> set[str]:
    """Every VIDMON_* variable the settings read: top-level fields, whole sections as JSON,
    and each section's fields."""
    names = set()
    for name, field in Settings.model_fields.items():
        names.add(f"VIDMON_{name.upper()}")
        annotation = field.annotation
        if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
            names |= {f"VIDMON_{name.upper()}__{sub.upper()}" for sub in annotation.model_fields}
    return names


def _variables(docs: list[dict[str, Any]]) -> dict[str, str]:
    """VIDMON_* variables the manifests set, with their values."""
    found: dict[str, str] = {}
    for doc in docs:
        if doc["kind"] == "ConfigMap":
            found |= {k: v for k, v in (doc.get("data") or {}).items()}
        elif doc["kind"] == "Secret":
            found |= {k: base64.b64decode(v).decode() for k, v in (doc.get("data") or {}).items()}
            found |= dict(doc.get("stringData") or {})
    for _, pod in _pods(docs):
        for container in pod["containers"]:
            found |= {e["name"]: e.get("value", "") for e in container.get("env", [])}
    return {k: v for k, v in found.items() if k.startswith("VIDMON_")}


def test_every_overlay_validates_against_the_kubernetes_schemas(rendered) -> None:
    from kubernetes_validate import utils

    overlay, docs = rendered
    for doc in docs:
        utils.validate(doc, KUBERNETES, strict=True)  # raises on the first error
    kinds = {d["kind"] for d in docs}
    assert {"StatefulSet", "Deployment", "Service", "HorizontalPodAutoscaler",
            "PodDisruptionBudget", "Job", "ConfigMap"} <= kinds, overlay


def test_every_container_has_probes_resources_and_a_non_root_user(rendered) -> None:
    overlay, docs = rendered
    owners = {f"{d['kind']}/{d['metadata']['name']}": d["kind"] for d in docs}
    for name, pod in _pods(docs):
        pod_context = pod.get("securityContext") or {}
        for container in pod["containers"]:
            where = f"{overlay}: {name} {container['name']}"
            if owners[name] in WORKLOADS:  # a Job's container runs to its end instead
                assert "readinessProbe" in container and "livenessProbe" in container, where
            resources = container.get("resources") or {}
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(kind) or {}), where
            context = container.get("securityContext") or {}
            assert context.get("runAsNonRoot", pod_context.get("runAsNonRoot")) is True, where
            assert context.get("runAsUser", pod_context.get("runAsUser", 0)) != 0, where
            assert context.get("allowPrivilegeEscalation") is False, where


def test_every_vidmon_variable_is_a_setting_and_the_trial_settings_load(
        rendered, monkeypatch: pytest.MonkeyPatch) -> None:
    overlay, docs = rendered
    variables = _variables(docs)
    assert variables, overlay
    unknown = sorted(set(variables) - _setting_names())
    assert not unknown, f"{overlay} sets variables vidmon does not read: {unknown}"
    if overlay == "trial":  # the trial is whole: its settings build as its pods would
        for key, value in variables.items():
            monkeypatch.setenv(key, value)
        settings = Settings()
        assert settings.clip_dir.startswith("s3://") and settings.media.video_store
        assert settings.objects.endpoint_url == "http://s3:9000"
        assert settings.auth.labeler_keys and not settings.retrain.auto_start


def test_images_are_pinned(rendered) -> None:
    overlay, docs = rendered
    for name, pod in _pods(docs):
        for container in pod["containers"]:
            image = container["image"]
            tag = image.rsplit("/", 1)[-1].partition(":")[2]
            assert "@sha256:" in image or (tag and tag != "latest"), f"{overlay}: {name} {image}"


def test_the_gpu_overlay_gives_the_api_and_workers_a_gpu() -> None:
    docs = _render("gpu")
    for doc in docs:
        if doc["kind"] not in WORKLOADS:
            continue
        pod = doc["spec"]["template"]["spec"]
        gpus = pod["containers"][0]["resources"]["limits"].get("nvidia.com/gpu")
        wants = doc["metadata"]["name"] in ("vidmon-api", "vidmon-worker")
        assert (gpus == 1) == wants, doc["metadata"]["name"]
        if wants:
            assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
            assert pod["containers"][0]["image"].endswith(":0.1.0-cuda")
