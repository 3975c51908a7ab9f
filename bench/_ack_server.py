"""A vidmon server for ``durability_bench.py``, answering when the record is durable (as
shipped) or, to measure what that costs, as soon as it is queued (the behaviour before:
``queued`` makes the writer's ``write`` return without waiting for the commit)."""

from __future__ import annotations

import asyncio
import sys

import uvicorn

from monitor.settings import Settings
from serving.app import create_app
from serving.writer import DurableWriter
from training.registry import RegistrySource


def answer_when_queued() -> None:
    """Patch the writer so a request no longer waits for its records' commit."""
    durable = DurableWriter.write
    running: set[asyncio.Task] = set()

    async def write(self: DurableWriter, records) -> None:  # type: ignore[no-untyped-def]
        task = asyncio.get_running_loop().create_task(durable(self, records))
        running.add(task)
        task.add_done_callback(running.discard)

    DurableWriter.write = write  # type: ignore[method-assign]


def main() -> None:
    mode, port = sys.argv[1], int(sys.argv[sys.argv.index("--port") + 1])
    if mode == "queued":
        answer_when_queued()
    settings = Settings()
    uvicorn.run(create_app(settings, RegistrySource(settings)), host="127.0.0.1", port=port,
                log_level="warning")


if __name__ == "__main__":
    main()
