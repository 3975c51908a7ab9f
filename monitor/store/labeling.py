"""The labeling queue's SQL: candidates, the sampling design written once per prediction,
and handing chosen predictions to labelers exactly once."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from monitor.store.repository import PredictionRepository
from monitor.store.records import Window
from monitor.store.schema import predictions


@dataclass(frozen=True)
class QueuedRow:
    """A chosen prediction as a labeler gets it."""

    prediction_id: str
    video_id: str | None
    created_at: datetime
    predicted_label: str
    clip_path: str | None
    p_wrong: float
    inclusion: float


def _version(model_name: str, model_version: str) -> list[sa.ColumnElement[bool]]:
    return [predictions.c.model_name == model_name,
            predictions.c.model_version == model_version,
            predictions.c.source == "production"]


class LabelingRepository:
    """Queue state lives on the prediction rows (``queue_*`` columns)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._predictions = PredictionRepository(engine)

    def candidates(self, model_name: str, model_version: str, since: datetime, last: int
                   ) -> Window:
        """Unlabeled predictions since ``since`` the queue has not considered yet (the
        newest ``last``)."""
        return self._predictions.load_window(
            model_name, model_version, since=since, last=last,
            where=[predictions.c.queue_inclusion.is_(None), predictions.c.true_label.is_(None)])

    def class_errors(self, model_name: str, model_version: str, since: datetime
                     ) -> dict[str, tuple[int, int]]:
        """Per predicted class, (labeled, wrong) production predictions since ``since``."""
        wrong = sa.func.sum(sa.case((predictions.c.true_label != predictions.c.predicted_label,
                                     1), else_=0))
        query = (sa.select(predictions.c.predicted_label, sa.func.count(), wrong)
                 .where(*_version(model_name, model_version),
                        predictions.c.created_at >= since, predictions.c.true_label.is_not(None))
                 .group_by(predictions.c.predicted_label))
        with self.engine.connect() as connection:
            return {label: (int(n), int(w or 0)) for label, n, w in connection.execute(query)}

    def consider(self, ids: list[str], p_wrong: list[float], inclusion: list[float],
                 selected: list[bool]) -> None:
        """Write each prediction's sampling design once (another replica may have
        considered some first: theirs stand)."""
        statement = (predictions.update()
                     .where(predictions.c.id == sa.bindparam("row_id"),
                            predictions.c.queue_inclusion.is_(None))
                     .values(queue_p_wrong=sa.bindparam("e"), queue_inclusion=sa.bindparam("pi"),
                             queue_selected=sa.bindparam("chosen")))
        with self.engine.begin() as connection:
            connection.execute(statement, [{"row_id": r, "e": e, "pi": pi, "chosen": chosen}
                                           for r, e, pi, chosen in zip(ids, p_wrong, inclusion,
                                                                       selected)])

    def owed(self, model_name: str, model_version: str, since: datetime, limit: int
             ) -> list[QueuedRow]:
        """Chosen predictions since ``since`` not yet handed out or labeled, oldest first."""
        query = (sa.select(predictions.c.id, predictions.c.video_id, predictions.c.created_at,
                           predictions.c.predicted_label, predictions.c.clip_path,
                           predictions.c.queue_p_wrong, predictions.c.queue_inclusion)
                 .where(*_version(model_name, model_version), predictions.c.created_at >= since,
                        predictions.c.queue_selected.is_(True),
                        predictions.c.queue_served_at.is_(None),
                        predictions.c.true_label.is_(None))
                 .order_by(predictions.c.created_at, predictions.c.id).limit(limit))
        with self.engine.connect() as connection:
            return [QueuedRow(*row) for row in connection.execute(query)]

    def serve(self, rows: list[QueuedRow], at: datetime) -> list[QueuedRow]:
        """Mark rows handed out; returns those this call marked (never one twice)."""
        statement = (predictions.update()
                     .where(predictions.c.id == sa.bindparam("row_id"),
                            predictions.c.queue_served_at.is_(None))
                     .values(queue_served_at=at))
        served = []
        with self.engine.begin() as connection:
            for row in rows:
                if connection.execute(statement, {"row_id": row.prediction_id}).rowcount == 1:
                    served.append(row)
        return served
