"""Machine tools some tests drive (Chromium, promtool): CI installs them and must have
them; a developer's machine without one skips those tests and says what to install."""

from __future__ import annotations

import os
import shutil

import pytest


def need_programs(*programs: str, install: str) -> list[str]:
    """Paths of ``programs``; fails under CI and skips elsewhere when one is missing."""
    found = [shutil.which(p) for p in programs]
    if all(found):
        return [str(f) for f in found]
    message = f"{' and '.join(programs)} needed ({install})"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)
