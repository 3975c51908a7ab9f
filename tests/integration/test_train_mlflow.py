"""Training end to end into a real MLflow store: run, registry, champion, reference profile."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from monitor.features import FEATURE_NAMES
from monitor.profile import probability_column
from monitor.settings import Settings
from simulations.cli import main
from monitor.preprocess import to_model_input
from tests.conftest import synthetic_card
from training import flavor, registry, tracking
from training.job import model_config_for, run_training
from training.modelfile import vidmon_network
from training.synthetic import CLASS_NAMES, ClipSpec, generate_dataset
from training.train import train_model


def test_champion_loads_with_the_same_logits_as_the_trained_model(settings: Settings) -> None:
    train = settings.train
    card = synthetic_card(train)
    spec = ClipSpec(train.frames, train.height, train.width)
    data = generate_dataset(2, seed=0, spec=spec)
    test = generate_dataset(1, seed=1, spec=spec)
    loaded = vidmon_network(model_config_for(train, len(card.labels)))
    result = train_model(loaded.network, card, data, test, epochs=1, batch_size=8)
    experiment_id = tracking.configure_mlflow(settings)
    with mlflow.start_run(experiment_id=experiment_id):
        info = flavor.log_model(loaded, card, settings.model_name, 128)
    client = MlflowClient()
    assert registry.ensure_champion(client, settings.model_name, str(info.registered_model_version))

    name, version = registry.resolve(f"models:/{settings.model_name}@{registry.CHAMPION}")
    champion = registry.load_version(name, version)

    assert (champion.name, champion.version) == (settings.model_name, "1")
    assert champion.card == card and champion.card.labels == CLASS_NAMES
    assert champion.loaded.format == "state_dict"
    assert champion.loaded.architecture == loaded.architecture
    clips = to_model_input(torch.from_numpy(test[0]), card)
    with torch.no_grad():
        expected_logits, expected_embedding = result.model.eval()(clips)
        logits, embedding = champion.loaded.network(clips)
    torch.testing.assert_close(logits, expected_logits)
    torch.testing.assert_close(embedding, expected_embedding)


def test_training_run_records_metrics_model_and_reference_profile(settings: Settings) -> None:
    outcome = run_training(settings)

    assert outcome.model_version == "1" and outcome.became_champion
    client = MlflowClient()
    run = client.get_run(outcome.run_id)
    assert run.data.params["epochs"] == "2"
    assert run.data.metrics["test_accuracy"] == pytest.approx(outcome.test_accuracy)
    history = client.get_metric_history(outcome.run_id, "val_accuracy")
    assert [m.step for m in history] == [1, 2]
    artifacts = {a.path for a in client.list_artifacts(outcome.run_id)}
    assert {"confusion_matrix.png", tracking.PROFILE_ARTIFACT, "card.json"} <= artifacts

    mlmodel = mlflow.models.get_model_info(f"models:/{settings.model_name}/1")
    meta = mlmodel.metadata["vidmon"]
    assert meta["card"]["labels"] == sorted(CLASS_NAMES)  # a dataset's classes, sorted
    assert meta["card"]["frames"] == settings.train.frames and meta["format"] == "state_dict"
    assert mlmodel.signature.inputs.inputs[0].shape == (
        -1, 3, settings.train.frames, settings.train.height, settings.train.width)

    # The run records what it learned from: the synthetic dataset's files, like any other.
    inputs = run.inputs.dataset_inputs
    assert [i.tags[0].value for i in inputs] == ["training"]
    described = tracking.dataset_description(outcome.run_id, "training")
    assert described["classes"] == {c: 5 for c in sorted(CLASS_NAMES)}
    assert described["splits"] == {"train": 30, "test": 20}
    assert described["digest"].startswith(inputs[0].dataset.digest)
    assert run.data.tags[tracking.TRAIN_DATA_TAG] == outcome.data
    assert run.data.params["training_test_videos"] == "20"

    profile = tracking.load_reference_profile(outcome.run_id)
    rows = settings.train.test_clips_per_class * len(CLASS_NAMES)
    assert len(profile.table) == rows
    assert profile.embeddings.shape == (rows, model_config_for(settings.train, 10).embedding_dim)
    assert set(FEATURE_NAMES) <= set(profile.table.columns)
    probabilities = profile.table[[probability_column(c) for c in CLASS_NAMES]].to_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    # The profile sees the held-out videos through the service's decoder, as uploads arrive.
    assert profile.accuracy == pytest.approx(run.data.metrics["reference_accuracy"])
    assert (profile.table["fps"] == settings.train.fps).all()


def test_a_second_version_does_not_replace_the_champion(settings: Settings) -> None:
    first = run_training(settings)
    second = run_training(settings)
    assert (first.model_version, second.model_version) == ("1", "2")
    assert not second.became_champion
    champion = MlflowClient().get_model_version_by_alias(settings.model_name, registry.CHAMPION)
    assert str(champion.version) == "1"


def test_shuffled_frame_control_run_is_logged_but_not_registered(settings: Settings) -> None:
    train = settings.train.model_copy(update={"shuffle_frames": True})
    outcome = run_training(settings.model_copy(update={"train": train}))
    assert outcome.model_version is None
    run = MlflowClient().get_run(outcome.run_id)
    assert run.data.tags["vidmon.control"] == "shuffled_frames"
    assert MlflowClient().search_model_versions(f"name='{settings.model_name}'") == []


def test_cli_trains_into_the_embedded_default_store(
    settings: Settings, tmp_path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("VIDMON_TRAIN__WIDTH_MULTIPLIER", "8")
    monkeypatch.setenv("VIDMON_MODEL_NAME", "cli-model")
    code = main(["train", "--epochs", "1", "--clips-per-class", "2",
                 "--test-clips-per-class", "1"])
    assert code == 0
    assert '"model_version": "1"' in capsys.readouterr().out
    # Embedded defaults: MLflow's SQLite file and artifact folder in the working directory.
    assert (tmp_path / "mlflow.db").exists()
    assert any((tmp_path / "mlartifacts").iterdir())
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert str(MlflowClient().get_model_version_by_alias("cli-model", registry.CHAMPION).version) == "1"


def test_versions_stored_without_a_card_are_not_offered_as_trained_models(
    settings: Settings,
) -> None:
    experiment_id = tracking.configure_mlflow(settings)
    with mlflow.start_run(experiment_id=experiment_id):  # how vidmon logged models before cards
        mlflow.pytorch.log_model(torch.nn.Linear(2, 2), name="model",
                                 registered_model_name=settings.model_name,
                                 serialization_format="pickle")
    outcome = run_training(settings)
    client = MlflowClient()
    assert outcome.model_version == "2"
    assert registry.trained_versions(client, settings.model_name) == ["2"]
    with pytest.raises(ValueError, match="was not stored by vidmon"):
        registry.load_version(settings.model_name, "1")


def test_a_synthetic_dataset_whose_files_are_gone_is_written_again(settings: Settings) -> None:
    from training.job import synthetic_data

    manifest = synthetic_data(settings.train)
    first = next(manifest.parent.rglob("*.mp4"))
    first.unlink()
    assert synthetic_data(settings.train) == manifest and first.is_file()


def test_versions_list_their_origin_and_accuracy_and_a_mistake_can_be_archived(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from simulations.cli import main

    first = run_training(settings)
    second = run_training(settings.model_copy(update={"train": settings.train.model_copy(
        update={"seed": 1})}))
    for key, value in settings.to_env().items():
        monkeypatch.setenv(key, value)
    capsys.readouterr()

    assert main(["versions", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [v["version"] for v in listed] == ["2", "1"]
    assert [v["origin"] for v in listed] == ["trained", "trained"]
    assert listed[1]["aliases"] == ["champion"] and not listed[0]["archived"]
    assert listed[1]["reference_accuracy"] == pytest.approx(first.test_accuracy)
    assert listed[0]["reference_accuracy"] == pytest.approx(second.test_accuracy)

    # The champion cannot be archived: one line, exit 2, nothing changed.
    assert main(["archive", "1"]) == 2
    assert "v1 is the champion" in capsys.readouterr().err
    assert main(["archive", "2"]) == 0 and '"archived": "2"' in capsys.readouterr().out
    assert main(["versions"]) == 0
    table = capsys.readouterr().out
    assert "v1" in table and "trained" in table and "champion" in table and "v2" not in table
    assert main(["versions", "--all"]) == 0 and "archived" in capsys.readouterr().out
    # Never served: promotion refuses it, and it is no trained model to start a demo from.
    assert main(["promote", "2"]) == 2
    assert "v2 of" in capsys.readouterr().err
    assert registry.trained_versions(MlflowClient(), settings.model_name) == ["1"]
    assert [v["version"] for v in registry.RegistrySource(settings).versions()] == ["1"]
    # Kept in MLflow with its run.
    assert MlflowClient().get_model_version(settings.model_name, "2").run_id == second.run_id
