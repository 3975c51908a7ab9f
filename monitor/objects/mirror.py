"""A dataset kept in an object store, mirrored into a local folder so that training and
retraining decode files, on any machine, without a shared disk (and a folder uploaded to
one, :func:`upload_folder`).

The folder is ``objects.dataset_cache/<bucket>/<prefix>``, the same on every host with the
same settings. An object is fetched only when the local copy's size or save time differs
from the store's, so a second run (or a retrain on the same worker) reads the cache; files
the store no longer lists are deleted from the mirror, so what is trained on is exactly
what the store holds. A download goes to a temp file that is renamed into place: a
concurrent reader or a second mirror of the same prefix never sees half a video.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from monitor.objects import ObjectInfo, open_store

if TYPE_CHECKING:
    from monitor.settings import ObjectStoreSettings

log = logging.getLogger(__name__)


class MirrorError(ValueError):
    """A dataset URL that cannot be mirrored: nothing under it, or too big to hold."""


def mirror_dataset(location: str, settings: ObjectStoreSettings) -> Path:
    """Bring every object under ``location`` (``s3://bucket/prefix``) into
    ``objects.dataset_cache/<bucket>/<prefix>`` and return that folder.

    Refuses, before fetching anything, a prefix with no objects or one larger than
    ``settings.dataset_max_bytes`` or the free space of the cache's disk."""
    store = open_store(location, settings)
    parts = store.location.removeprefix("s3://").split("/")
    if ".." in parts:
        raise MirrorError(f"{location!r} is not s3://bucket/prefix")
    root = Path(settings.dataset_cache, *parts)
    listed = [info for page in store.pages() for info in page
              if not info.key.endswith("/")]  # folder markers are not files
    if not listed:
        raise MirrorError(f"no objects under {store.location}")
    total = sum(info.size for info in listed)
    if total > settings.dataset_max_bytes:
        raise MirrorError(f"{store.location} holds {total / 2**30:.1f} GiB, over "
                          f"objects.dataset_max_bytes ({settings.dataset_max_bytes / 2**30:.1f}"
                          " GiB)")
    root.mkdir(parents=True, exist_ok=True)
    wanted = {_local(root, info.key): info for info in listed}
    missing = [(path, info) for path, info in wanted.items() if not _current(path, info)]
    needed = sum(info.size for _, info in missing)
    free = shutil.disk_usage(root).free
    if needed > free:
        raise MirrorError(f"{store.location} needs {needed / 2**30:.1f} GiB more in {root}, "
                          f"which has {free / 2**30:.1f} GiB free")
    log.info("mirroring %s into %s: %d of %d objects to fetch (%.1f MB)", store.location,
             root, len(missing), len(listed), needed / 1e6)
    step = max(1, len(missing) // 10)
    for done, (path, info) in enumerate(missing, start=1):
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.part")
        try:
            store.get_file(info.key, partial)
            os.utime(partial, (info.saved_at, info.saved_at))
            partial.replace(path)
        finally:
            partial.unlink(missing_ok=True)
        if done % step == 0 or done == len(missing):
            log.info("mirroring %s: %d of %d fetched", store.location, done, len(missing))
    _drop_unlisted(root, set(wanted))
    return root


def upload_folder(folder: Path, location: str, settings: ObjectStoreSettings) -> int:
    """Put every file under ``folder`` at ``location``, keyed by its relative path; the
    number of files."""
    store = open_store(location, settings)
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file())
    for done, path in enumerate(files, start=1):
        store.put_file(path.relative_to(folder).as_posix(), path)
        if done % max(1, len(files) // 10) == 0:
            log.info("uploading to %s: %d of %d files", store.location, done, len(files))
    return len(files)


def _local(root: Path, key: str) -> Path:
    path = (root / key).resolve()
    if root.resolve() not in path.parents:
        raise MirrorError(f"object key {key!r} points outside the mirror {root}")
    return path


def _current(path: Path, info: ObjectInfo) -> bool:
    """Whether the local copy is the stored object: same size, saved at the same time."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return False
    return stat.st_size == info.size and abs(stat.st_mtime - info.saved_at) < 1e-3


def _drop_unlisted(root: Path, wanted: set[Path]) -> None:
    """Delete mirrored files the store no longer has (temp files of a running mirror are
    left to it)."""
    for path in sorted(root.resolve().rglob("*")):
        if path.is_file() and path not in wanted and not path.name.endswith(".part"):
            log.info("%s is no longer in the store: removed from the mirror", path)
            path.unlink(missing_ok=True)
