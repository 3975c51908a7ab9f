"""An S3 bucket (or any service speaking the S3 API) as an object store.

boto3 is imported here only, when a location is an ``s3://`` URL. A PUT is atomic in S3: a
reader sees the old object, the new one, or none, never half of one. Calls are bounded by
``objects.timeout_s`` and retried ``objects.attempts`` times by botocore itself, so an away
store costs a caller a bounded wait and an exception, never a hang.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monitor.objects import ObjectInfo

if TYPE_CHECKING:
    from monitor.settings import ObjectStoreSettings

_MISSING = ("404", "NoSuchKey", "NotFound")


def _missing(exc: Exception) -> bool:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code")) in _MISSING


class S3Store:
    """Objects under ``s3://bucket/prefix``."""

    def __init__(self, location: str, settings: ObjectStoreSettings) -> None:
        import boto3
        from botocore.config import Config

        rest = location.removeprefix("s3://")
        self.bucket, _, prefix = rest.partition("/")
        if not self.bucket:
            raise ValueError(f"{location!r} names no bucket: s3://bucket/prefix")
        self.prefix = prefix.strip("/")
        self.location = f"s3://{self.bucket}" + (f"/{self.prefix}" if self.prefix else "")
        secret = settings.secret_access_key
        self.client: Any = boto3.session.Session().client(
            "s3", endpoint_url=settings.endpoint_url, region_name=settings.region,
            aws_access_key_id=settings.access_key_id,
            aws_secret_access_key=secret.get_secret_value() if secret else None,
            config=Config(connect_timeout=settings.timeout_s, read_timeout=settings.timeout_s,
                          retries={"max_attempts": settings.attempts, "mode": "standard"},
                          s3={"addressing_style": settings.addressing_style}))

    def _key(self, key: str) -> str:
        if key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"{key!r} is outside the store {self.location}")
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes, *, immutable: bool = False) -> None:
        # Content-addressed objects are put again rather than checked first: one request
        # either way, and the new save time restarts retention's grace period.
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def put_file(self, key: str, path: Path) -> None:
        self.client.upload_file(str(path), self.bucket, self._key(key))

    def get(self, key: str) -> bytes:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except self.client.exceptions.ClientError as exc:
            if _missing(exc):
                raise FileNotFoundError(self.url(key)) from exc
            raise
        return response["Body"].read()

    def get_file(self, key: str, path: Path) -> None:
        try:
            self.client.download_file(self.bucket, self._key(key), str(path))
        except self.client.exceptions.ClientError as exc:
            if _missing(exc):
                raise FileNotFoundError(self.url(key)) from exc
            raise

    def stat(self, key: str) -> ObjectInfo | None:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except self.client.exceptions.ClientError as exc:
            if _missing(exc):
                return None
            raise
        return ObjectInfo(key, int(head["ContentLength"]), head["LastModified"].timestamp())

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def pages(self, prefix: str = "") -> Iterator[list[ObjectInfo]]:
        """A page of up to 1,000 objects per list request."""
        root = f"{self.prefix}/" if self.prefix else ""
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=root + prefix):
            found = [ObjectInfo(o["Key"][len(root):], int(o["Size"]),
                                o["LastModified"].timestamp())
                     for o in page.get("Contents", [])]
            if found:
                yield found

    def url(self, key: str) -> str:
        return f"{self.location}/{key}"
