"""Object storage: the clips kept for retraining, the Evidently workspace copies and the
uploaded long videos.

A location is a local folder (the embedded default) or ``s3://bucket/prefix`` on any service
that speaks the S3 API (AWS, MinIO, Ceph, moto), with endpoint, region and credentials from
``Settings.objects``. Both are one small contract, :class:`ObjectStore`, so the clip store,
retention and the workspace copies work the same on either, and replicas on other machines
share what is stored by URL instead of by a shared disk.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from monitor.settings import ObjectStoreSettings


@dataclass(frozen=True)
class ObjectInfo:
    """One stored object: its key under the store's root, size and last save (epoch s)."""

    key: str
    size: int
    saved_at: float


class ObjectStore(Protocol):
    """What vidmon needs of a place that keeps bytes by key (keys use ``/``)."""

    location: str

    def put(self, key: str, data: bytes, *, immutable: bool = False) -> None:
        """Store ``data`` whole or not at all. ``immutable``: the key names its content, so
        an object already there only has its save time renewed."""

    def put_file(self, key: str, path: Path) -> None:
        """Store a local file's bytes."""

    def get(self, key: str) -> bytes:
        """The object's bytes; ``FileNotFoundError`` when there is none."""

    def get_file(self, key: str, path: Path) -> None:
        """Copy the object into a local file; ``FileNotFoundError`` when there is none."""

    def stat(self, key: str) -> ObjectInfo | None:
        """The object's size and save time; None when there is none."""

    def delete(self, key: str) -> None:
        """Delete the object if it is there."""

    def pages(self, prefix: str = "") -> Iterator[list[ObjectInfo]]:
        """Every object under ``prefix``, a bounded page at a time."""

    def url(self, key: str) -> str:
        """Where ``key`` lives, for people and for :func:`open_url`."""


def is_remote(location: str | Path) -> bool:
    """Whether ``location`` is an object-store URL rather than a local folder."""
    return str(location).startswith("s3://")


def open_store(location: str | Path, settings: ObjectStoreSettings | None = None
               ) -> ObjectStore:
    """The store at ``location``: ``s3://bucket/prefix`` or a local folder."""
    from monitor.objects.folder import FolderStore

    text = str(location)
    if is_remote(text):
        from monitor.objects.s3 import S3Store

        if settings is None:
            from monitor.settings import ObjectStoreSettings

            settings = ObjectStoreSettings()
        return S3Store(text, settings)
    if "://" in text:
        raise ValueError(f"unsupported storage location {text!r}: a folder or "
                         "s3://bucket/prefix")
    return FolderStore(Path(text))


def open_url(url: str, settings: ObjectStoreSettings | None = None) -> tuple[ObjectStore, str]:
    """The store and key of one object's URL (``s3://bucket/prefix/key``)."""
    head, _, key = url.rstrip("/").rpartition("/")
    return open_store(head, settings), key
