"""Failures a user of the ``vidmon`` command can cause or fix, said in one line.

A missing file, a bad card or dataset, a store or MLflow server that does not answer, a
port taken, no model registered yet: the command prints what went wrong and what to do,
and exits 2. Anything else is a bug and keeps its traceback; ``--debug`` shows the
traceback of every failure.
"""

from __future__ import annotations

import re

from monitor.settings import Settings

# How MLflow's REST client and requests say that nothing answered at the address.
_UNREACHABLE = re.compile(r"Max retries exceeded|Connection refused|Failed to establish|"
                          r"Name or service not known|timed out", re.IGNORECASE)


def _redacted(url: str) -> str:
    """A database URL without its password."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _store_failure(exc: BaseException, settings: Settings | None) -> str | None:
    from sqlalchemy.exc import ArgumentError, InterfaceError, OperationalError

    where = f" at {_redacted(settings.database_url)}" if settings else ""
    if isinstance(exc, ArgumentError):
        return f"VIDMON_DATABASE_URL is not a database URL ({_first_line(exc)})"
    if isinstance(exc, (OperationalError, InterfaceError)):
        cause = _first_line(getattr(exc, "orig", None) or exc)
        return (f"cannot reach the store{where}: {cause} (start the database or set "
                "VIDMON_DATABASE_URL)")
    return None


def _mlflow_failure(exc: BaseException, settings: Settings | None) -> str | None:
    from mlflow.exceptions import MlflowException

    if not isinstance(exc, MlflowException):
        return None
    where = settings.mlflow_tracking_uri if settings else "the tracking URI"
    if _UNREACHABLE.search(str(exc)):
        return (f"cannot reach the MLflow server at {where} (start it, e.g. `mlflow "
                "server`, or set VIDMON_MLFLOW_TRACKING_URI)")
    if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
        return f"{_first_line(exc)} in MLflow at {where} (`vidmon versions` lists them)"
    return None


def explain(exc: BaseException, settings: Settings | None) -> str | None:
    """One line saying what went wrong and what to do, or None for a failure that is a
    bug (it keeps its traceback)."""
    from pydantic import ValidationError

    from monitor.card import CardError
    from monitor.errors import VidmonError
    from training.datasets import DatasetError
    from training.modelfile import ModelFileError

    if isinstance(exc, (VidmonError, CardError, DatasetError, ModelFileError)):
        return _first_line(exc)
    if isinstance(exc, ValidationError):  # settings from the environment, .env or a flag
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                             for e in exc.errors()[:3])
        return f"invalid setting ({problems}); see docs/settings.md"
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError,
                        NotADirectoryError)) and exc.filename:
        return f"{exc.strerror}: {exc.filename}"
    return _store_failure(exc, settings) or _mlflow_failure(exc, settings)
