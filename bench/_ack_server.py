"""A vidmon server for ``durability_bench.py``, answering when the record is durable (as
shipped) or, to measure what that costs, as soon as it is queued (the behaviour before:
``queued`` patches the writer so the request does not wait for its commit)."""

from __future__ import annotations

import asyncio
import sys

import uvicorn

from monitor.settings import Settings
from serving.app import create_app
from training.registry import RegistrySource


def main() -> None:
    mode, port = sys.argv[1], int(sys.argv[sys.argv.index("--port") + 1])
    settings = Settings()
    app = create_app(settings, RegistrySource(settings))
    if mode == "queued":
        lifespan = app.router.lifespan_context

        def queued_lifespan(app):  # type: ignore[no-untyped-def]
            class Patched:
                async def __aenter__(self):  # type: ignore[no-untyped-def]
                    self.inner = lifespan(app)
                    result = await self.inner.__aenter__()
                    writer = app.state.writer
                    durable = writer.write
                    tasks: set = set()

                    async def write(records):  # type: ignore[no-untyped-def]
                        task = asyncio.get_running_loop().create_task(durable(records))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                    writer.write = write
                    return result

                async def __aexit__(self, *exc):  # type: ignore[no-untyped-def]
                    return await self.inner.__aexit__(*exc)
            return Patched()
        app.router.lifespan_context = queued_lifespan
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
