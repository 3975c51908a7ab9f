"""``vidmon migrate``: make the store's schema current and the object-store buckets exist,
once, before the services start (a Kubernetes Job, a compose one-shot). The services also
migrate at start; this lets a platform run it as its own step and see it fail loudly."""

from __future__ import annotations

import sys

from monitor.objects import is_remote
from monitor.settings import Settings


def locations(settings: Settings) -> dict[str, str]:
    """The object-store URLs the settings name, by what they hold."""
    named = {"clips": settings.clip_dir, "Evidently workspace": settings.evidently_workspace,
             "uploaded videos": settings.media.video_store}
    return {what: str(url) for what, url in named.items() if url and is_remote(str(url))}


def ensure_bucket(url: str, settings: Settings, create: bool) -> str:
    """Check that ``url``'s bucket answers (creating it when asked); what was done."""
    from monitor.objects.s3 import S3Store

    store = S3Store(url, settings.objects)
    try:
        store.client.head_bucket(Bucket=store.bucket)
        return "exists"
    except store.client.exceptions.ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code"))
        if code not in ("404", "NoSuchBucket", "NotFound") or not create:
            raise
    if settings.objects.region == "us-east-1":
        store.client.create_bucket(Bucket=store.bucket)
    else:
        store.client.create_bucket(Bucket=store.bucket, CreateBucketConfiguration={
            "LocationConstraint": settings.objects.region})
    return "created"


def migrate_command(settings: Settings, create_buckets: bool) -> int:
    """Upgrade the store and check (or create) the buckets; progress on stderr."""
    from sqlalchemy.engine import make_url

    from monitor.store import create_store_engine, upgrade_database

    store = make_url(settings.database_url).render_as_string(hide_password=True)
    print(f"vidmon migrate: upgrading the store {store}", file=sys.stderr, flush=True)
    engine = create_store_engine(settings.database_url)
    try:
        upgrade_database(engine)
    finally:
        engine.dispose()
    failed = 0
    for what, url in locations(settings).items():
        try:
            done = ensure_bucket(url, settings, create_buckets)
            print(f"vidmon migrate: {what}: {url} ({done})", file=sys.stderr, flush=True)
        except Exception as exc:  # noqa: BLE001 - said plainly, then a failing exit
            failed += 1
            hint = "" if create_buckets else " (--create-buckets makes a missing one)"
            print(f"vidmon migrate: {what}: {url} is not usable: {exc}{hint}",
                  file=sys.stderr, flush=True)
    return 1 if failed else 0
