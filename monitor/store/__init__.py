"""The store: schema (Alembic migrations), engine setup and the repository that owns all SQL."""

from monitor.store.engine import create_store_engine, upgrade_database
from monitor.store.records import FeedbackResult, PredictionRecord
from monitor.store.repository import PredictionRepository

__all__ = [
    "FeedbackResult",
    "PredictionRecord",
    "PredictionRepository",
    "create_store_engine",
    "upgrade_database",
]
