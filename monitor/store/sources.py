"""The sources predictions come from (cameras, streams, clients): which ids are admitted,
so that their number, and with it every per-source report, alert and metric, stays
bounded."""

from __future__ import annotations

import re
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from monitor.store.schema import sources

OTHER_SOURCE = "other"  # where predictions of sources beyond the bound pool
SOURCE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}")


def valid_source_id(value: str) -> bool:
    """Whether ``value`` may name a source: 1-64 letters, digits and ``._:/-``, starting
    with a letter or digit."""
    return SOURCE_ID.fullmatch(value) is not None


class SourceRepository:
    """Admits source ids up to a bound; the ids seen before stay admitted."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def admitted(self) -> set[str]:
        """Every admitted source id."""
        with self.engine.connect() as connection:
            return set(connection.execute(sa.select(sources.c.id)).scalars())

    def admit(self, source_id: str, most: int, now: datetime) -> bool:
        """Admit ``source_id`` if it is known or fewer than ``most`` are; whether it is.
        Replicas racing on the last places may admit a few more than ``most``."""
        with self.engine.begin() as connection:
            if connection.execute(sa.select(sources.c.id).where(
                    sources.c.id == source_id)).first() is not None:
                return True
            count = connection.execute(sa.select(sa.func.count()).select_from(sources)
                                       ).scalar_one()
            if count >= most:
                return False
            try:
                with connection.begin_nested():
                    connection.execute(sources.insert(), {"id": source_id, "first_seen": now})
            except IntegrityError:  # another replica admitted it meanwhile
                pass
        return True
