"""Loops that poll the store log an outage once, not a traceback every poll."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy.exc import OperationalError

from monitor.store.engine import OutageLog


def test_an_outage_is_one_warning_and_its_end_one_line(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("vidmon.test.outage")
    outage = OutageLog(log, "looking for work")
    away = OperationalError("SELECT 1", {}, OSError("failed to resolve host 'link'\nmore"))
    with caplog.at_level(logging.INFO, logger=log.name):
        outage.ok()  # nothing to say while all is well
        for _ in range(50):
            outage.failed(away)
        outage.ok()
        outage.ok()
        outage.failed(ValueError("a bug"))
    lines = [(r.levelname, r.getMessage(), r.exc_info is not None) for r in caplog.records]
    assert lines == [
        ("WARNING", "looking for work: the store is away (failed to resolve host 'link'); "
                    "trying again", False),
        ("INFO", "looking for work: the store is back", False),
        ("ERROR", "looking for work failed", True),  # not the store: its traceback
    ]
