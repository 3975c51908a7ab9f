"""A local folder as an object store: the embedded default."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from monitor.objects import ObjectInfo


class FolderStore:
    """Objects as files under ``root``; a key's ``/`` are folders. Writes go to a temp file
    that is renamed into place, so a reader never sees half an object."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.location = str(self.root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise ValueError(f"{key!r} is outside the store {self.root}")
        return path

    def put(self, key: str, data: bytes, *, immutable: bool = False) -> None:
        target = self._path(key)
        if immutable:
            try:
                os.utime(target)  # saved again: retention's grace period starts over
                return
            except FileNotFoundError:
                pass
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        partial.write_bytes(data)
        partial.replace(target)

    def put_file(self, key: str, path: Path) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        shutil.copyfile(path, partial)
        partial.replace(target)

    def get(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def get_file(self, key: str, path: Path) -> None:
        shutil.copyfile(self._path(key), path)

    def stat(self, key: str) -> ObjectInfo | None:
        try:
            stat = self._path(key).stat()
        except FileNotFoundError:
            return None
        return ObjectInfo(key, stat.st_size, stat.st_mtime)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def pages(self, prefix: str = "") -> Iterator[list[ObjectInfo]]:
        """One page per folder under ``prefix`` (the clip store's two-hex-digit folders keep
        each bounded); files directly in it come first."""
        start = self.root / prefix if prefix else self.root
        if not start.is_dir():
            return
        folders = [start]
        while folders:
            folder = folders.pop(0)
            page = []
            for entry in sorted(os.scandir(folder), key=lambda e: e.name):
                try:
                    if entry.is_dir(follow_symlinks=False):
                        folders.append(Path(entry.path))
                        continue
                    stat = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # deleted while listed
                key = Path(entry.path).relative_to(self.root).as_posix()
                page.append(ObjectInfo(key, stat.st_size, stat.st_mtime))
            if page:
                yield page

    def url(self, key: str) -> str:
        return str(self.root / key)
