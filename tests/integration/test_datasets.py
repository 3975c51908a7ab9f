"""Datasets of real encoded video files: the three layouts, bad files, and training on them."""

from __future__ import annotations

import csv
import json
import logging
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from monitor.card import ModelCard
from monitor.objects import open_store
from monitor.settings import ObjectStoreSettings, Settings
from simulations.cli import main
from training import registry, tracking
from training.datasets import (
    DatasetError,
    VideoDataset,
    load_clips,
    open_dataset,
    require_usable,
)
from training.retrain import original_data
from training.synthetic import CLASS_NAMES, ClipSpec, generate_named_clip
from training.video_io import write_video
from tests.media import write_colour_dataset
from tests.s3server import S3Server  # the s3 fixture: tests/conftest.py

CARD = ModelCard(labels=("grow", "move_left", "move_right"), frames=8, height=32, width=32)


def _write(path: Path, label: str, seed: int, frames: int = 12) -> Path:
    clip = generate_named_clip(label, np.random.default_rng(seed), ClipSpec(frames, 40, 48))
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_video(clip, path, fps=8.0)


def _folder_dataset(root: Path, per_class: int = 5) -> Path:
    for label in CARD.labels:
        for i in range(per_class):
            _write(root / label / f"{label}-{i}.mp4", label, seed=hash((label, i)) % 10_000)
    return root


def test_a_folder_per_class_is_split_by_class_and_decoded_like_uploads(tmp_path: Path) -> None:
    dataset = VideoDataset.open(_folder_dataset(tmp_path / "ucf"), seed=3, test_fraction=0.2)
    assert dataset.layout == "folder" and dataset.labels == CARD.labels
    assert dataset.class_counts() == {label: 5 for label in CARD.labels}
    held = dataset.split("held_out")
    assert sorted(i.label for i in held) == sorted(CARD.labels)  # one of each class
    assert dataset.split_sizes() == {"train": 12, "test": 3}
    again = VideoDataset.open(tmp_path / "ucf", seed=3, test_fraction=0.2)
    assert [i.path for i in again.split("test")] == [i.path for i in held]  # seeded
    assert again.digest == dataset.digest
    part = load_clips(held, CARD)
    assert part.clips.shape == (3, 8, 32, 32, 3) and part.clips.dtype == np.uint8
    assert [m.width for m in part.metas] == [48] * 3 and not part.skipped


def test_a_csv_manifest_keeps_its_splits_and_paths_relative_to_it(tmp_path: Path) -> None:
    rows = []
    for label in CARD.labels:
        for i, split in enumerate(["train", "train", "val", "test"]):
            _write(tmp_path / "videos" / f"{label}{i}.mp4", label, seed=i)
            rows.append([f"videos/{label}{i}.mp4", label, split])
    manifest = tmp_path / "data.csv"
    with manifest.open("w", newline="") as handle:
        csv.writer(handle).writerows([["path", "label", "split"], *rows])
    dataset = VideoDataset.open(manifest)
    assert dataset.layout == "manifest"
    assert dataset.split_sizes() == {"train": 6, "val": 3, "test": 3}
    assert {i.path.name for i in dataset.split("held_out")} == {f"{c}3.mp4" for c in CARD.labels}
    before = dataset.digest
    (tmp_path / "videos" / "grow0.mp4").write_bytes(b"changed")  # a rewritten file
    assert VideoDataset.open(manifest).digest != before


def test_a_kinetics_csv_reports_missing_and_corrupt_files_and_uses_the_rest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lines = ["label,youtube_id,time_start,time_end,split"]
    for label in CARD.labels:
        for i in range(3):
            youtube_id = f"yt{CARD.labels.index(label)}{i:08d}"  # 11 characters, as YouTube's
            lines.append(f"{label},{youtube_id},{10 * i},{10 * i + 10},train")
            if (label, i) == ("grow", 0):
                continue  # listed, never downloaded
            target = tmp_path / f"{youtube_id}_{10 * i:06d}_{10 * i + 10:06d}.mp4"
            if (label, i) == ("move_left", 1):
                target.write_bytes(b"\x00\x00\x00\x18ftypmp42 truncated download")
            else:
                _write(target, label, seed=i)
    (tmp_path / "kinetics_train.csv").write_text("\n".join(lines) + "\n")
    dataset = VideoDataset.open(tmp_path / "kinetics_train.csv")
    assert dataset.layout == "kinetics" and len(dataset.items) == 9
    part = load_clips(list(dataset.items), CARD)
    assert len(part.clips) == 7
    reasons = dict((p.name, why) for p, why in part.skipped)
    assert sorted(reasons) == ["yt000000000_000000_000010.mp4", "yt100000001_000010_000020.mp4"]
    assert reasons["yt000000000_000000_000010.mp4"] == "missing"
    assert "not a readable video" in reasons["yt100000001_000010_000020.mp4"]
    assert "skipped 2 unusable video file(s)" in caplog.text


def test_unusable_datasets_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no dataset at"):
        VideoDataset.open(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no class folders"):
        VideoDataset.open(tmp_path / "empty")
    (tmp_path / "odd.csv").write_text("file,class\na.mp4,x\n")
    with pytest.raises(DatasetError, match=r"unknown CSV layout \(header \['file', 'class'\]\)"):
        VideoDataset.open(tmp_path / "odd.csv")
    root = tmp_path / "small"
    _write(root / "grow" / "a.mp4", "grow", 1)
    _write(root / "grow" / "b.mp4", "grow", 2)
    _write(root / "move_left" / "a.mp4", "move_left", 1)
    (root / "move_left" / "b.mp4").write_bytes(b"broken")
    dataset = VideoDataset.open(root)
    part = load_clips(list(dataset.items), CARD)
    with pytest.raises(DatasetError, match=r"\['move_left'\] have fewer than 2 usable videos"):
        require_usable(dataset, part)


def test_vidmon_synth_writes_a_dataset_like_any_other(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["synth", "--out", str(tmp_path / "shapes"), "--clips-per-class", "2",
                 "--test-clips-per-class", "1", "--size", "32", "--frames", "8"]) == 0
    printed = capsys.readouterr().out
    assert "wrote 30 videos of 10 classes" in printed
    assert f"train --data {tmp_path / 'shapes' / 'manifest.csv'}" in printed
    dataset = VideoDataset.open(tmp_path / "shapes")  # the folder is read through its manifest
    assert dataset.layout == "manifest" and dataset.labels == tuple(sorted(CLASS_NAMES))
    assert dataset.split_sizes() == {"train": 20, "test": 10}
    assert len(list((tmp_path / "shapes").rglob("*.mp4"))) == 30


def test_vidmon_train_data_learns_from_a_folder_of_videos_and_records_it(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("VIDMON_MLFLOW_TRACKING_URI", settings.mlflow_tracking_uri)
    monkeypatch.setenv("VIDMON_MODEL_NAME", "files-model")
    monkeypatch.setenv("VIDMON_TRAIN", json.dumps({
        "width_multiplier": 8, "batch_size": 8, "frames": 8, "seed": 0, "learning_rate": 0.01}))
    data = write_colour_dataset(tmp_path / "colours", per_class=15)
    (data / "blue" / "0.mp4").write_bytes(b"not a video")  # reported and skipped

    # 8 epochs left seed 0's data at 7 of 9 (train accuracy 0.91); 16 reach 9 of 9 on data
    # seeds 0-5 in 5-7 s
    assert main(["train", "--data", str(data), "--epochs", "16"]) == 0
    outcome = json.loads(capsys.readouterr().out)
    assert outcome["model_version"] == "1" and outcome["data"] == str(data)
    assert outcome["skipped_files"] == 1
    # 3 classes of 15 encoded videos, 20% held out per class: far above chance (1/3).
    assert outcome["test_accuracy"] >= 0.8, outcome
    run = MlflowClient().get_run(outcome["run_id"])
    assert run.data.tags[tracking.TRAIN_DATA_TAG] == str(data)
    assert run.data.tags["vidmon.skipped_files"] == "1"
    described = tracking.dataset_description(outcome["run_id"], "training")
    assert described["classes"] == {"blue": 15, "green": 15, "red": 15}
    assert described["splits"] == {"train": 36, "test": 9} and described["layout"] == "folder"
    print(f"\nheld-out accuracy on 9 test videos: {outcome['test_accuracy']:.3f}")


def test_a_dataset_the_card_does_not_cover_is_a_clear_error(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("VIDMON_MLFLOW_TRACKING_URI", settings.mlflow_tracking_uri)
    card = tmp_path / "card.json"
    card.write_text(json.dumps({"labels": ["grow", "move_left"], "frames": 8, "height": 32,
                                "width": 32}))
    data = _folder_dataset(tmp_path / "three", per_class=2)
    assert main(["train", "--data", str(data), "--card", str(card)]) == 2
    assert "labels ['move_right'] that the card" in capsys.readouterr().err
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    assert MlflowClient().search_registered_models() == []


def _upload(folder: Path, url: str, objects: ObjectStoreSettings) -> None:
    store = open_store(url, objects)
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            store.put_file(path.relative_to(folder).as_posix(), path)


def test_a_dataset_in_an_object_store_is_mirrored_and_named_by_its_url(
    s3: S3Server, tmp_path: Path,
) -> None:
    url = s3.bucket() + "/datasets/ucf"
    _upload(_folder_dataset(tmp_path / "ucf", per_class=3), url, s3.settings())
    here = s3.settings().model_copy(update={"dataset_cache": tmp_path / "host-a"})
    there = s3.settings().model_copy(update={"dataset_cache": tmp_path / "host-b"})

    dataset = open_dataset(url, here, seed=3)
    assert dataset.layout == "folder" and dataset.origin == url
    assert dataset.class_counts() == {label: 3 for label in CARD.labels}
    assert {i.ref for i in dataset.items} == {
        f"{url}/{label}/{label}-{i}.mp4" for label in CARD.labels for i in range(3)}
    assert all(i.path.is_relative_to(tmp_path / "host-a") for i in dataset.items)
    # another host mirrors it elsewhere and names the same videos the same way
    other = open_dataset(url, there, seed=3)
    assert other.digest == dataset.digest
    assert [i.ref for i in other.split("test")] == [i.ref for i in dataset.split("test")]
    assert load_clips(dataset.split("test"), CARD).videos.tolist() == \
        load_clips(other.split("test"), CARD).videos.tolist()

    # the store is what is trained on: a rewritten video is fetched again, a deleted one
    # leaves the mirror, the others are read from it
    store = open_store(url, s3.settings())
    store.put("grow/grow-0.mp4", (tmp_path / "ucf" / "grow" / "grow-1.mp4").read_bytes())
    store.delete("move_left/move_left-2.mp4")
    kept = tmp_path / "host-a" / url.removeprefix("s3://") / "move_right" / "move_right-0.mp4"
    kept_at = kept.stat().st_mtime_ns
    again = open_dataset(url, here, seed=3)
    assert again.class_counts() == {"grow": 3, "move_left": 2, "move_right": 3}
    mirrored = tmp_path / "host-a" / url.removeprefix("s3://")
    assert (mirrored / "grow" / "grow-0.mp4").read_bytes() == \
        (tmp_path / "ucf" / "grow" / "grow-1.mp4").read_bytes()
    assert not (mirrored / "move_left" / "move_left-2.mp4").exists()
    assert kept.stat().st_mtime_ns == kept_at
    assert again.digest != dataset.digest


def test_a_dataset_url_that_cannot_be_mirrored_is_a_clear_error(
    s3: S3Server, tmp_path: Path,
) -> None:
    url = s3.bucket() + "/datasets/ucf"
    objects = s3.settings().model_copy(update={"dataset_cache": tmp_path / "cache"})
    with pytest.raises(DatasetError, match="no objects under"):
        open_dataset(url, objects)
    _upload(_folder_dataset(tmp_path / "ucf", per_class=2), url, s3.settings())
    small = objects.model_copy(update={"dataset_max_bytes": 1000})
    with pytest.raises(DatasetError, match="over objects.dataset_max_bytes"):
        open_dataset(url, small)
    assert not (tmp_path / "cache").exists()  # refused before fetching anything
    with pytest.raises(DatasetError, match="is a URL"):
        VideoDataset.open(url)


def test_a_model_trained_from_a_url_retrains_on_a_host_without_its_files(
    s3: S3Server, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
) -> None:
    """``vidmon synth --out s3://...`` writes a dataset into the store, ``vidmon train --data
    s3://...`` records it by URL, and a retrain on another host (another cache, the
    trainer's files gone) reads the same split from the store."""
    url = s3.bucket() + "/shapes"
    objects = s3.settings()
    monkeypatch.setenv("VIDMON_MLFLOW_TRACKING_URI", settings.mlflow_tracking_uri)
    monkeypatch.setenv("VIDMON_MODEL_NAME", "url-model")
    monkeypatch.setenv("VIDMON_TRAIN", json.dumps({
        "width_multiplier": 8, "batch_size": 8, "frames": 8, "epochs": 1}))
    monkeypatch.setenv("VIDMON_OBJECTS", json.dumps({
        "endpoint_url": objects.endpoint_url, "access_key_id": objects.access_key_id,
        "secret_access_key": objects.secret_access_key.get_secret_value(),
        "addressing_style": "path", "dataset_cache": str(tmp_path / "trainer")}))
    assert main(["synth", "--out", url, "--clips-per-class", "2", "--test-clips-per-class",
                 "1", "--size", "32", "--frames", "8"]) == 0
    assert f" train --data {url}\n" in capsys.readouterr().out
    assert main(["train", "--data", url]) == 0
    outcome = json.loads(capsys.readouterr().out)
    run = MlflowClient().get_run(outcome["run_id"])
    assert run.data.tags[tracking.TRAIN_DATA_TAG] == url
    described = tracking.dataset_description(outcome["run_id"], "training")
    assert described["source"] == url and described["layout"] == "manifest"
    assert described["splits"] == {"train": 20, "test": 10}
    listing = tracking.dataset_files(run.data.tags, "training")
    assert all(row["path"].startswith(url + "/") for row in csv.DictReader(listing.open()))

    shutil.rmtree(tmp_path / "trainer")  # the trainer's copy is gone
    worker = Settings(objects=objects.model_copy(
        update={"dataset_cache": tmp_path / "worker"}),
        retrain={"original_clips_per_class": 2})
    card = ModelCard(labels=tuple(sorted(CLASS_NAMES)), frames=8, height=32, width=32)
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    with caplog.at_level(logging.WARNING, logger="training.retrain"):
        original = original_data(worker, registry.lineage(outcome["run_id"]), card, [])
    assert "changed since" not in caplog.text  # same digest: the files the champion used
    assert original.source == url
    assert len(original.train) == 20 and len(original.test) == 10
    assert (tmp_path / "worker").is_dir()
