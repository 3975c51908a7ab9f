"""How to spell a ``vidmon`` command so that it works when pasted as printed."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path


def vidmon_command(*args: object) -> str:
    """``vidmon ARGS`` with the absolute path of this installation's script (a virtual
    environment's bin folder is usually not on PATH), quoted for a POSIX shell."""
    script = Path(sys.executable).parent / "vidmon"
    head = [str(script)] if script.exists() else [sys.executable, "-m", "simulations.cli"]
    return " ".join(shlex.quote(str(a)) for a in [*head, *args])
