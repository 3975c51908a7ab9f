"""A real S3-compatible server on 127.0.0.1 for tests: moto's standalone server, from the
package registries (the test extra installs it), in a process of its own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

from monitor.settings import ObjectStoreSettings
from tests.media import free_port
from tests.needs import need_programs

ACCESS_KEY, SECRET_KEY = "vidmon-test", "vidmon-test-secret"


def _moto_server() -> str:
    """The test extra's moto_server beside this Python (its venv may not be on PATH), else
    the one on PATH; CI fails without it, a developer's machine skips (need_programs)."""
    found = Path(sys.executable).parent / "moto_server"
    if found.exists():
        return str(found)
    return need_programs("moto_server", install="pip install 'moto[server]', in the test "
                                                "extra")[0]


class S3Server:
    """moto's server on a free port of 127.0.0.1; stop and start it to take the store away
    (moto keeps its objects in memory, so a restarted server is empty)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 20.0) -> S3Server:
        self.process = subprocess.Popen(
            [_moto_server(), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                httpx.get(self.endpoint + "/moto-api/", timeout=1.0)
                return self
            except httpx.HTTPError:
                if self.process.poll() is not None:
                    raise RuntimeError("moto_server exited at start") from None
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moto_server did not answer on {self.endpoint}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None

    def settings(self, timeout_s: float = 2.0, attempts: int = 1) -> ObjectStoreSettings:
        """Settings that reach this server (short timeouts, so faults show quickly)."""
        return ObjectStoreSettings(endpoint_url=self.endpoint, access_key_id=ACCESS_KEY,
                                   secret_access_key=SECRET_KEY, addressing_style="path",
                                   timeout_s=timeout_s, attempts=attempts)

    def bucket(self, name: str | None = None) -> str:
        """Create a bucket; its ``s3://`` URL."""
        from monitor.objects.s3 import S3Store

        name = name or f"b-{uuid.uuid4().hex[:12]}"
        S3Store(f"s3://{name}", self.settings()).client.create_bucket(Bucket=name)
        return f"s3://{name}"
