"""Datasets of labeled video files, in the layouts teams already have.

:meth:`VideoDataset.open` reads any of:

- a folder per class, ``ROOT/<label>/<file>`` (the UCF101 / ImageFolder layout);
- a CSV manifest with a header ``path,label[,split]``, paths relative to the CSV's folder
  (a folder holding ``manifest.csv`` is read through it; ``vidmon synth`` writes one);
- a Kinetics-style annotation CSV ``label,youtube_id,time_start,time_end,split``, with files
  named ``<youtube_id>_<time_start:06d>_<time_end:06d>.mp4`` beside it (or in
  ``<split>/<label>/`` or ``<label>/`` below it, as the common downloaders write them).

Any of them may sit in an object store: :func:`open_dataset` mirrors ``s3://bucket/prefix``
into a local folder (:mod:`monitor.objects.mirror`) and names each video by its URL, so the
listing MLflow records, the digest and the video ids are the same on every host, and a
retrain on another machine finds the files again (:func:`open_listing`).

Splits are ``train``, ``val`` and ``test``; the held-out set is ``test`` (or ``val`` when
there is no ``test``). Without splits, a seeded split stratified by class holds out a share
of every class. :func:`load_clips` decodes files through the service's own decoder and clip
sampling (:mod:`monitor.video`); missing, unreadable and empty files are reported and
skipped.
"""

from __future__ import annotations

import csv
import hashlib
import logging
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from monitor.card import ModelCard
from monitor.errors import InvalidInput, PayloadTooLarge
from monitor.features import VideoMeta
from monitor.objects import is_remote
from monitor.objects.mirror import MirrorError, mirror_dataset
from monitor.video import DecodeLimits, decode_video
from training.progress import counted

if TYPE_CHECKING:
    from monitor.settings import ObjectStoreSettings

log = logging.getLogger(__name__)

MANIFEST = "manifest.csv"
VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".gif", ".m4v", ".mpg", ".mpeg"}
SPLITS = ("train", "val", "test")
_KINETICS = ("label", "youtube_id", "time_start", "time_end")


class DatasetError(ValueError):
    """A dataset that cannot be used: unknown layout, empty, or a class too small."""


@dataclass(frozen=True)
class VideoItem:
    """One labeled video file: ``path`` is where it is read on this host, ``name`` its URL
    when the dataset lives in an object store."""

    path: Path
    label: str
    split: str
    name: str = ""

    @property
    def ref(self) -> str:
        """The video's host-independent name: its URL, else its path."""
        return self.name or str(self.path)


@dataclass(frozen=True)
class VideoDataset:
    """Labeled video files with their split, read from one of the supported layouts."""

    source: Path
    layout: str  # folder | manifest | kinetics
    items: tuple[VideoItem, ...]
    origin: str | None = None  # the object-store URL mirrored at (or above) source

    @property
    def location(self) -> str:
        """Where the dataset lives: its URL, else its local path."""
        return self.origin or str(self.source)

    @classmethod
    def open(cls, path: str | Path, *, seed: int = 0, test_fraction: float = 0.2,
             remote: tuple[str, Path] | None = None) -> "VideoDataset":
        """Read a dataset folder or CSV; files are checked when they are decoded.
        ``remote`` is (URL, local mirror) for a dataset kept in an object store: its videos
        are named by URL, and a CSV may list them by URL under it."""
        if is_remote(str(path)):
            raise DatasetError(f"{path} is a URL: open it with open_dataset")
        path = Path(path).resolve()
        if remote is not None:
            remote = (remote[0].rstrip("/"), remote[1])
        if path.is_dir() and (path / MANIFEST).is_file():
            path = path / MANIFEST
        if path.is_dir():
            layout, rows = "folder", _folder_rows(path)
        elif path.is_file() and path.suffix.lower() == ".csv":
            layout, rows = _csv_rows(path, remote)
        elif path.exists():
            raise DatasetError(f"{path} is neither a folder nor a .csv manifest")
        else:
            raise DatasetError(f"no dataset at {path}")
        if not rows:
            raise DatasetError(f"the dataset at {path} lists no videos")
        items = _with_splits(rows, seed, test_fraction)
        if remote is not None:
            items = [replace(item, name=_url_of(item.path, remote)) for item in items]
        dataset = cls(path, layout, tuple(items), remote[0] if remote else None)
        if len(dataset.labels) < 2:
            raise DatasetError(f"the dataset at {path} has {len(dataset.labels)} class; a "
                               "classifier needs at least 2")
        return dataset

    @property
    def labels(self) -> tuple[str, ...]:
        """Class names, sorted: the order of a model trained on the dataset."""
        return tuple(sorted({item.label for item in self.items}))

    def split(self, name: str) -> list[VideoItem]:
        """Items of one split; ``held_out`` is test (or val when there is no test)."""
        if name == "held_out":
            return self.split("test") or self.split("val")
        return [item for item in self.items if item.split == name]

    @property
    def digest(self) -> str:
        """sha256 over the listing (file, label, split) and file sizes: it changes when a
        file is added, moved, relabeled or rewritten, not when the listing is re-read from
        another manifest of the same files."""
        h = hashlib.sha256()
        for item in sorted(self.items, key=lambda i: i.ref):
            size = item.path.stat().st_size if item.path.is_file() else -1
            h.update(f"{item.ref}\t{item.label}\t{item.split}\t{size}\n".encode())
        return h.hexdigest()

    def class_counts(self) -> dict[str, int]:
        """Videos per class."""
        return dict(sorted(Counter(item.label for item in self.items).items()))

    def split_sizes(self) -> dict[str, int]:
        """Videos per split."""
        return {name: len(self.split(name)) for name in SPLITS if self.split(name)}

    def describe(self) -> dict[str, object]:
        """What the MLflow run records about the dataset."""
        return {"source": self.location, "layout": self.layout,
                "digest": self.digest, "videos": len(self.items),
                "classes": self.class_counts(), "splits": self.split_sizes()}


def _folder_rows(root: Path) -> list[tuple[Path, str, str | None]]:
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DatasetError(f"{root} has no class folders: expected ROOT/<label>/<video>, a "
                           f"{MANIFEST} (path,label[,split]) or a Kinetics-style CSV")
    return [(file, folder.name, None) for folder in classes for file in sorted(folder.rglob("*"))
            if file.is_file() and file.suffix.lower() in VIDEO_SUFFIXES]


def _csv_rows(path: Path, remote: tuple[str, Path] | None = None
              ) -> tuple[str, list[tuple[Path, str, str | None]]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        header = [h.strip() for h in (reader.fieldnames or [])]
        reader.fieldnames = header
        records = list(reader)
    if {"path", "label"} <= set(header):
        rows = []
        for number, row in enumerate(records, start=2):
            if not (row.get("path") or "").strip() or not (row.get("label") or "").strip():
                raise DatasetError(f"{path}:{number}: every row needs a path and a label")
            rows.append((_row_path(path, row["path"].strip(), remote, number),
                         row["label"].strip(), _split(row.get("split"), path, number)))
        return "manifest", rows
    if set(_KINETICS) <= set(header):
        rows = []
        for number, row in enumerate(records, start=2):
            try:
                name = (f"{row['youtube_id'].strip()}_{int(float(row['time_start'])):06d}_"
                        f"{int(float(row['time_end'])):06d}.mp4")
            except (ValueError, AttributeError):
                raise DatasetError(f"{path}:{number}: time_start and time_end must be numbers"
                                   ) from None
            split, label = _split(row.get("split"), path, number), row["label"].strip()
            rows.append((_kinetics_file(path.parent, name, label, split), label, split))
        return "kinetics", rows
    raise DatasetError(f"{path}: unknown CSV layout (header {header}); expected "
                       f"path,label[,split] or {','.join(_KINETICS)},split")


def _row_path(manifest: Path, value: str, remote: tuple[str, Path] | None, number: int
              ) -> Path:
    """Where a manifest row's file is read: relative to the manifest, or, for a URL under a
    mirrored dataset, in its mirror."""
    if not is_remote(value):
        return manifest.parent / value
    if remote is None or not value.startswith(remote[0] + "/"):
        raise DatasetError(f"{manifest}:{number}: {value} is not under the dataset's URL"
                           + (f" {remote[0]}" if remote else ""))
    return remote[1] / value[len(remote[0]) + 1:]


def _url_of(path: Path, remote: tuple[str, Path]) -> str:
    url, root = remote
    try:
        relative = path.resolve().relative_to(root.resolve())
    except ValueError:
        raise DatasetError(f"{path} is outside the mirror of {url}: a dataset kept in an "
                           "object store may only name videos under its URL") from None
    return f"{url}/{relative.as_posix()}"


def open_dataset(location: str | Path, objects: ObjectStoreSettings, *, seed: int = 0,
                 test_fraction: float = 0.2) -> VideoDataset:
    """A dataset on disk, or at ``s3://bucket/prefix`` (mirrored on this host first)."""
    if not is_remote(str(location)):
        return VideoDataset.open(location, seed=seed, test_fraction=test_fraction)
    url = str(location).rstrip("/")
    root = _mirror(url, objects)
    return VideoDataset.open(root, seed=seed, test_fraction=test_fraction, remote=(url, root))


def open_listing(listing: Path, source: str, objects: ObjectStoreSettings) -> VideoDataset:
    """The exact files a run recorded (:func:`training.tracking.dataset_files`); a dataset
    kept at a URL is mirrored on this host first, wherever it was trained."""
    if not is_remote(source):
        return VideoDataset.open(listing)
    return VideoDataset.open(listing, remote=(source, _mirror(source, objects)))


def _mirror(url: str, objects: ObjectStoreSettings) -> Path:
    try:
        return mirror_dataset(url, objects)
    except MirrorError as exc:
        raise DatasetError(str(exc)) from None


def _kinetics_file(root: Path, name: str, label: str, split: str | None) -> Path:
    candidates = [root / name, root / (split or "") / label / name, root / label / name]
    return next((c for c in candidates if c.exists()), candidates[0])


def _split(value: str | None, path: Path, number: int) -> str | None:
    value = (value or "").strip().lower()
    if value in ("", "none"):
        return None
    if value not in SPLITS:
        raise DatasetError(f"{path}:{number}: split {value!r} is not one of {SPLITS}")
    return value


def _with_splits(rows: list[tuple[Path, str, str | None]], seed: int, test_fraction: float
                 ) -> list[VideoItem]:
    """Rows without a split get one: ``test_fraction`` of every class held out (at least one
    of a class with two or more), seeded."""
    rng = np.random.default_rng(seed)
    unsplit: dict[str, list[int]] = {}
    for i, (_, label, split) in enumerate(rows):
        if split is None:
            unsplit.setdefault(label, []).append(i)
    held: set[int] = set()
    for label in sorted(unsplit):
        members = rng.permutation(unsplit[label])
        cut = max(1, round(len(members) * test_fraction)) if len(members) > 1 else 0
        held.update(int(i) for i in members[:cut])
    return [VideoItem(path, label, split or ("test" if i in held else "train"))
            for i, (path, label, split) in enumerate(rows)]


def video_key(ref: str | Path) -> str:
    """A dataset video's id in the store's ``video_id`` column (32 hex characters of the hash
    of its :attr:`VideoItem.ref`), shared by every clip cut from it."""
    return hashlib.blake2b(str(ref).encode(), digest_size=16).hexdigest()


@dataclass
class LoadedClips:
    """Decoded clips of some items, one row per clip: label indices, the source file's
    metadata, the item and its video id (a long video gives several clips, as serving
    cuts it), and what was skipped."""

    clips: np.ndarray
    labels: np.ndarray
    metas: list[VideoMeta]
    items: list[VideoItem]
    skipped: list[tuple[Path, str]]
    videos: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.videos is None:
            self.videos = np.array([video_key(item.ref) for item in self.items], dtype=object)

    @property
    def video_count(self) -> int:
        """Distinct videos the clips came from."""
        return len(set(self.videos.tolist()))

    def report(self) -> str:
        """A line on the skipped files (count and the first few), or ''."""
        if not self.skipped:
            return ""
        first = "; ".join(f"{p}: {why}" for p, why in self.skipped[:3])
        return f"skipped {len(self.skipped)} unusable video file(s): {first}"


def load_clips(items: list[VideoItem], card: ModelCard, *, max_frames: int = 2000,
               max_clips: int = 1, description: str = "decoding videos") -> LoadedClips:
    """Decode each file into its clips through the service's decoder and clip plan: under
    stride sampling a long video gives up to ``max_clips`` evenly spaced clips, as serving
    cuts an upload (``ServeSettings.max_clips_per_video``; 1: the centre clip). Unusable
    files are skipped and reported; a label the card does not know is an error (see
    :func:`require_usable` for class sizes)."""
    unknown = sorted({item.label for item in items} - set(card.labels))
    if unknown:
        raise DatasetError(f"labels {unknown} are not in the model card's labels")
    clips, labels, metas, kept, videos, skipped = [], [], [], [], [], []
    limits = replace(DecodeLimits.trusted(max_frames), max_clips=max(1, max_clips))
    for item in counted(items, description, "video"):
        try:
            decoded = decode_video(item.path.read_bytes(), card, limits)
        except FileNotFoundError:
            skipped.append((item.path, "missing"))
            continue
        except (InvalidInput, PayloadTooLarge, OSError) as exc:
            skipped.append((item.path, str(exc)))
            continue
        key = video_key(item.ref)
        for clip in decoded.clips:
            clips.append(clip)
            labels.append(card.labels.index(item.label))
            metas.append(decoded.meta)
            kept.append(item)
            videos.append(key)
    loaded = LoadedClips(np.stack(clips) if clips else np.zeros((0, *card.clip_shape), np.uint8),
                         np.asarray(labels, dtype=np.int64), metas, kept, skipped,
                         np.asarray(videos, dtype=object))
    if loaded.skipped:
        log.warning("%s", loaded.report())
    if not clips:
        raise DatasetError(f"none of the {len(items)} videos could be used"
                           + (f" ({loaded.report()})" if skipped else ""))
    return loaded


def require_usable(dataset: VideoDataset, *parts: LoadedClips, minimum: int = 2) -> None:
    """Every class of the dataset needs ``minimum`` usable videos across ``parts``."""
    counts = Counter(item.label for item in {i.path: i for part in parts
                                               for i in part.items}.values())
    small = [label for label in dataset.labels if counts[label] < minimum]
    if small:
        raise DatasetError(f"classes {small} have fewer than {minimum} usable videos "
                           f"({', '.join(f'{c}: {counts[c]}' for c in small)}) in "
                           f"{dataset.source}")
