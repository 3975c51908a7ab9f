"""A link host for the multi-host test: a TCP relay between the API hosts and the store that,
on SIGUSR1, holds every byte going to the store back by ``WAN_DELAY_MS`` (50 ms), as ``tc
netem delay`` on the API hosts' egress would, and on SIGUSR2 lets it through at once again.
(The test machines' kernel has no netem; packet loss is added with iptables' statistic match
on this host.) Standard library only: it runs in any container with Python.

    python wanlink.py LISTEN_PORT TARGET_HOST TARGET_PORT
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

DELAY_S = float(os.environ.get("WAN_DELAY_MS", "50")) / 1000
delay = 0.0


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                delayed: bool) -> None:
    """Copy ``reader`` to ``writer``; when ``delayed``, each chunk leaves ``delay`` after it
    came in, in order."""
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    async def send() -> None:
        while True:
            due, chunk = await queue.get()
            if not chunk:
                break
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(chunk)
            await writer.drain()

    sender = asyncio.create_task(send())
    try:
        while True:
            chunk = await reader.read(65536)
            queue.put_nowait((loop.time() + (delay if delayed else 0.0), chunk))
            if not chunk:
                break
        await sender
    except (ConnectionError, OSError):
        sender.cancel()
    finally:
        writer.close()


async def _relay(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter,
                 host: str, port: int) -> None:
    try:
        server_reader, server_writer = await asyncio.open_connection(host, port)
    except OSError:
        client_writer.close()
        return
    await asyncio.gather(_pump(client_reader, server_writer, True),
                         _pump(server_reader, client_writer, False),
                         return_exceptions=True)


def _set_delay(seconds: float) -> None:
    global delay
    delay = seconds
    print(f"wanlink: delay {seconds * 1000:.0f} ms", flush=True)


async def main(listen: int, host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, _set_delay, DELAY_S)
    loop.add_signal_handler(signal.SIGUSR2, _set_delay, 0.0)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    server = await asyncio.start_server(lambda r, w: _relay(r, w, host, port), "0.0.0.0", listen)
    print(f"wanlink: {listen} -> {host}:{port}", flush=True)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], int(sys.argv[3])))
